package e2e

import (
	"bytes"
	"image/png"
	"strings"
	"testing"

	"github.com/chromedp/chromedp"
)

// TestLayout checks the demo's design as a person sees it, in Chromium: the
// avatar stack hides no initials and no status dot, the status shapes tell
// the statuses apart without colour, the roster shows long names whole, and
// at 390 px (a phone) the header holds in two rows with the room's stack near
// the top and the room list below the room.
func TestLayout(t *testing.T) {
	browser(t)
	const room = "layout"
	g := startGateway(t, newStore(t, "memory"))
	g.seedRoom(t, room)
	alice := newUser(t, "Alice")
	alice.do(t, "set the viewport", chromedp.EmulateViewport(1200, 800))
	alice.signIn(t, g, room)
	alice.waitStack(t, "", room, "four people", func(s stack) bool { return s.Count == "4" })
	alice.waitFor(t, "four people in the roster", `document.querySelectorAll('[data-member-list] .pr-person').length === 4`)
	alice.still(t)

	t.Run("stack initials and dots are not covered", func(t *testing.T) {
		// Probe the painted page: the points just inside each avatar's
		// initials (left and right end, middle height) and the centre of
		// each dot must hit that avatar / that dot, not a neighbour.
		bad, err := eval[[]string](alice, `(() => {
			const out = [];
			const avatars = [...document.querySelectorAll('.pr-roomhead__stack .pr-stack > .pr-avatar')];
			if (avatars.length < 4) out.push('only ' + avatars.length + ' avatars');
			for (const av of avatars) {
				const id = av.getAttribute('data-presence-user');
				const r = document.createRange();
				r.selectNodeContents(av.querySelector('.pr-avatar__initials'));
				const b = r.getBoundingClientRect();
				const y = b.top + b.height / 2;
				for (const x of [b.left + 1, b.right - 1]) {
					const hit = document.elementFromPoint(x, y);
					if (!hit || hit.closest('.pr-avatar') !== av) out.push(id + ': initials covered at x=' + Math.round(x) + ' by ' + (hit && hit.closest('.pr-avatar') ? hit.closest('.pr-avatar').getAttribute('data-presence-user') : hit && hit.className));
				}
				const dot = av.querySelector('.pr-dot');
				const d = dot.getBoundingClientRect();
				const hit = document.elementFromPoint(d.left + d.width / 2, d.top + d.height / 2);
				if (!hit || hit.closest('.pr-dot') !== dot) out.push(id + ': dot covered by ' + (hit && hit.className));
			}
			return out;
		})()`)
		if err != nil {
			t.Fatal(err)
		}
		for _, b := range bad {
			t.Error(b)
		}
	})

	t.Run("status shapes differ without colour", func(t *testing.T) {
		// One dot per status on a plain background, at the smallest size
		// (sm, 8 px: the stack's and the picker's) and at 32 px, captured and
		// reduced to ink / no ink (colour thrown away): the four shapes must
		// differ from each other at both sizes.
		if _, err := eval[bool](alice, `(() => {
			const box = document.createElement('div');
			box.id = 'shapes';
			box.style.cssText = 'position:fixed;left:0;top:0;z-index:99;display:flex;gap:8px;padding:8px;background:#fff';
			for (const size of ['sm', 'xl']) {
				for (const s of ['online', 'away', 'busy', 'offline']) {
					const d = document.createElement('span');
					d.className = 'pr-dot pr-dot--sm';
					d.setAttribute('data-status', s);
					d.id = 'shape-' + size + '-' + s;
					if (size === 'xl') d.style.setProperty('--pr-dot-size', '32px');
					d.innerHTML = '<span class="pr-dot__mark"></span>';
					box.appendChild(d);
				}
			}
			document.body.appendChild(box);
			return true;
		})()`); err != nil {
			t.Fatal(err)
		}
		names := []string{"online", "away", "busy", "offline"}
		for _, size := range []string{"sm", "xl"} {
			masks := map[string][]bool{}
			for _, s := range names {
				img, err := chromedp.Run(alice.ctxTimeout(t), chromedp.Screenshot(chromedp.CSS("#shape-"+size+"-"+s+" .pr-dot__mark")))
				if err != nil {
					t.Fatal(err)
				}
				masks[s] = inkMask(t, img)
			}
			for i, a := range names {
				for _, b := range names[i+1:] {
					d := maskDiff(masks[a], masks[b])
					t.Logf("%s: %s vs %s: %.0f%% of %d pixels differ", size, a, b, d*100, len(masks[a]))
					if d < 0.08 {
						t.Errorf("%s: %s and %s have the same shape without colour (%.0f%% of pixels differ)", size, a, b, d*100)
					}
				}
			}
		}
		if _, err := eval[bool](alice, `document.getElementById('shapes').remove() || true`); err != nil {
			t.Fatal(err)
		}
	})

	t.Run("the roster shows long names whole", func(t *testing.T) {
		got, err := eval[string](alice, `(() => {
			const el = [...document.querySelectorAll('[data-member-list] .pr-person__display')].find(e => e.textContent.startsWith('Maximiliana'));
			if (!el) return 'no long name in the roster';
			const cs = getComputedStyle(el);
			if (cs.textOverflow === 'ellipsis' || el.scrollWidth > el.clientWidth + 1) return 'truncated: ' + el.scrollWidth + ' > ' + el.clientWidth;
			const list = el.closest('.pr-people').getBoundingClientRect(), r = el.getBoundingClientRect();
			if (r.right > list.right + 1) return 'overflows the roster';
			return 'ok ' + el.getClientRects().length;
		})()`)
		if err != nil || !strings.HasPrefix(got, "ok") {
			t.Fatalf("long name: %s (%v)", got, err)
		}
	})

	t.Run("a phone at 390 px", func(t *testing.T) {
		alice.do(t, "a phone's viewport", chromedp.EmulateViewport(390, 844, chromedp.EmulateMobile, chromedp.EmulateTouch))
		alice.waitFor(t, "the phone layout", `innerWidth === 390`)
		bad, err := eval[[]string](alice, `(() => {
			const out = [];
			const rect = s => document.querySelector(s).getBoundingClientRect();
			if (document.documentElement.scrollWidth > 390) out.push('the page scrolls sideways: ' + document.documentElement.scrollWidth + ' px wide');
			const top = rect('.pr-topbar');
			if (top.height > 130) out.push('header is ' + Math.round(top.height) + ' px tall');
			const brand = rect('.pr-topbar .pr-brand'), me = rect('.pr-topbar .pr-me');
			if (Math.abs((brand.top + brand.height / 2) - (me.top + me.height / 2)) > 12) out.push('brand and "me" are not on one row');
			const btns = [...document.querySelectorAll('.pr-seg__btn')].map(b => b.getBoundingClientRect());
			if (new Set(btns.map(b => Math.round(b.top))).size !== 1) out.push('the status picker wraps');
			if (btns.some(b => b.left < 0 || b.right > 390)) out.push('the status picker leaves the screen');
			const stack = rect('.pr-roomhead__stack');
			if (stack.top > 360) out.push("the room's stack starts " + Math.round(stack.top) + ' px down');
			if (rect('.pr-sidebar').top < rect('.pr-main').bottom - 1) out.push('the room list is not below the room');
			return out;
		})()`)
		if err != nil {
			t.Fatal(err)
		}
		for _, b := range bad {
			t.Error(b)
		}
	})
}

// inkMask decodes a PNG and marks the pixels that differ from its top-left
// pixel (the background) in lightness: colour is thrown away.
func inkMask(t *testing.T, b []byte) []bool {
	t.Helper()
	img, err := png.Decode(bytes.NewReader(b))
	if err != nil {
		t.Fatal(err)
	}
	lum := func(x, y int) float64 {
		r, g, b, _ := img.At(x, y).RGBA()
		return (0.2126*float64(r) + 0.7152*float64(g) + 0.0722*float64(b)) / 65535
	}
	bounds := img.Bounds()
	bg := lum(bounds.Min.X, bounds.Min.Y)
	var m []bool
	for y := bounds.Min.Y; y < bounds.Max.Y; y++ {
		for x := bounds.Min.X; x < bounds.Max.X; x++ {
			d := lum(x, y) - bg
			m = append(m, d > 0.12 || d < -0.12)
		}
	}
	return m
}

// maskDiff is the share of pixels where two masks disagree.
func maskDiff(a, b []bool) float64 {
	if len(a) != len(b) || len(a) == 0 {
		return 1
	}
	n := 0
	for i := range a {
		if a[i] != b[i] {
			n++
		}
	}
	return float64(n) / float64(len(a))
}
