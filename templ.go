// Package presenced is the root of the presence gateway: it holds the static
// files that the binary serves, embedded so that one binary is the whole
// deployment, and the go:generate line that turns views/*.templ into Go.
package presenced

import "embed"

//go:generate go tool templ generate

// Static holds static/: presence.js, the stylesheet and the pinned vendored
// htmx files.
//
//go:embed static
var Static embed.FS
