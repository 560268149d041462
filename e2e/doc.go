// Package e2e holds presenced's browser tests (issue #4 §4): a real gateway
// started in-process on a loopback port, Debian's Chromium driven over the
// DevTools protocol with chromedp, one isolated browser context (its own
// cookie jar) per user. The package has no code outside its tests.
//
// Run them with
//
//	go test -race -count=1 ./e2e/
//
// Without a Chromium they are skipped, except under CI=true, where a missing
// browser fails them. PRESENCE_CHROMIUM overrides the browser's path
// (default /usr/bin/chromium, then chromium, chromium-browser, google-chrome
// on PATH). The room tests also run against Redis when redis-server is
// installed (see store/redistest).
//
// How the tests make things happen:
//   - sign-in: the dev /login form, typed and submitted in the user's own
//     BrowserContext, so the presence_token cookie lands in that jar only;
//   - typing: real key events in the demo's data-presence-typing box;
//   - a hidden tab: a second tab opened in the same window of the user's
//     BrowserContext; Chromium hides every tab of a window but the active one,
//     so the page gets a real visibilitychange ("hidden"), and
//     Target.activateTarget brings it back;
//   - a closed tab: Target.closeTarget, as a person closing it (pagehide runs
//     and presence.js sends its offline beacon). The browsers talk to the
//     gateway's handler through a small recorder of POST /api/presence, so
//     the test can tell the beacon from the leave grace of the closed stream.
//
// Accessibility and design, in the same Chromium:
//   - TestAccessibility injects axe-core (e2e/testdata/axe.min.js, pinned and
//     checksummed by scripts/vendor.sh, never served) and requires 0 WCAG 2.x
//     A/AA violations on the sign-in page, the demo and the live widget (htmx
//     2 and 4), with prefers-color-scheme emulated light and dark;
//   - TestKeyboard reaches and operates the status picker and the room list
//     with real Tab and Enter key events, and checks the focus ring;
//   - TestLayout probes the painted page (elementFromPoint, element
//     screenshots reduced to ink/no ink) for covered initials and dots, status
//     shapes that differ without colour, whole long names, a 390 px phone;
//   - TestLiveWidgetHtmx runs the cross-origin widget on htmx 2 and htmx 4.
//
// schema_test.go needs no browser: it validates real API answers and real
// JSON stream events against docs/openapi.yaml and docs/schema/
// (santhosh-tekuri/jsonschema). client_test.go has the Go client (package
// client) follow a room that a person uses in Chromium.
//
// PRESENCE_SCREENSHOT=1 (make screenshots) makes TestScreenshotDemo write
// docs/screenshot-demo.png and -demo-dark.png (1200×800),
// docs/screenshot-mobile.png (390×844 at 2×) and docs/screenshot-embed-dark.png
// (examples/embed.html served as published, on its dark host page).
package e2e
