package policy

import (
	_ "embed"
)

//go:embed default.toml
var defaultText []byte

// DefaultSource is how the built-in default policy is named in messages.
const DefaultSource = "built-in default policy"

// DefaultText returns the text of the built-in default policy (the same
// as contrib/heapd.toml).
func DefaultText() []byte { return append([]byte(nil), defaultText...) }

// Default parses the built-in default policy, resolving names with lookup
// (nil: SystemLookup).
func Default(lookup Lookup) *Policy {
	p, err := Parse(defaultText, &ParseOptions{Source: DefaultSource, Lookup: lookup})
	if err != nil {
		panic("policy: the built-in default policy does not parse: " + err.Error())
	}
	return p
}
