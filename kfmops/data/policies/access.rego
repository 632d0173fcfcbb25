# Access decisions: for every dataset the plan judges, why it may be exposed as it will be (rationale)
# and what the publisher owes while it is (obligations). They are recorded, not enforced: the plan's
# `policy.decisions` and the ledger entry's `access_decisions` carry them beside the findings.
package kfmops

import data.kfmops_lib as lib
import rego.v1

# An array, not a set: rego-cpp adds to a set in time linear in its size, so a set of one decision per
# dataset costs time quadratic in the datasets judged (9.9 s instead of 1.3 s at 1,000 datasets).
decisions := [decision |
	some d
	record := lib.judged[d]
	decision := {
		"dataset": d,
		"access": access(record),
		"rationale": array.concat(array.concat(labels(record), consents(record)), array.concat(reviews(record), levels(record))),
		"obligations": array.concat(array.concat(masking(record), renewals(record)), array.concat(keep_internal(record), waiver_expiries(record))),
	}
]

access(record) := "internal" if {
	lib.internal(record)
} else := "restricted" if {
	lib.restricted(record)
} else := "public"

labels(record) := [concat("", [
	"CARE label ", lib.text(object.get(lib.care(record), "label", "unset")),
	", sovereignty ", lib.text(object.get(lib.care(record), "sovereignty", "unset")),
])]

consents(record) := [concat("", [
	"consent ", lib.text(object.get(c, "reference", "-")), " of ", lib.text(object.get(c, "authority", "-")),
	", granted ", lib.text(object.get(c, "granted", "-")), ", expires ", lib.text(object.get(c, "expires", "never")),
]) |
	lib.has_consent(record)
	c := lib.care(record).consent
]

reviews(record) := [concat("", ["steward review ", lib.text(lib.care(record).review)]) |
	lib.needs_review(record)
	lib.has_text(lib.care(record), "review")
]

levels(record) := [lib.level_text(record) | lib.sensitive(record)]

masking(record) := [masking_text(record) | lib.sensitive(record)]

masking_text(record) := concat("", [
	"publish only H3 cells of resolution ", lib.band(record), ", at least ",
	format_int(lib.min_sites_per_cell, 10), " sites per cell, no exact coordinates",
]) if {
	lib.method(record) == "h3"
} else := "publish region polygons only, no H3 cells or points" if {
	lib.method(record) == "region-only"
} else := "publish no geometry"

renewals(record) := [concat("", [
	"renew consent ", lib.text(object.get(c, "reference", "-")), " with ", lib.text(object.get(c, "authority", "-")),
	" before ", lib.day(c.expires),
]) |
	lib.has_consent(record)
	c := lib.care(record).consent
	lib.is_date(c.expires)
]

keep_internal(record) := ["keep out of public catalogs and search"] if {
	lib.internal(record)
} else := []

waiver_expiries(record) := [concat("", [
	"waiver of ", lib.text(w.rule), " by ", lib.text(object.get(w, "authority", "-")), " lapses on ", lib.day(w.expires),
]) |
	some w in object.get(lib.care(record), "waivers", [])
	is_object(w)
	lib.is_date(w.expires)
]
