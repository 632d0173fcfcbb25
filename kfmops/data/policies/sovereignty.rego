# Indigenous data sovereignty: a restricted dataset (sovereignty tribal, sovereign or restricted, or
# label restricted or community-use-only; configurable) may be exposed publicly only with a recorded,
# unexpired consent. "Exposed" means the plan creates or updates its STAC catalog reference or its
# search alias while spec.care.visibility is public or unset. Deleting those references is always fine.
package kfmops

import data.kfmops_lib as lib
import rego.v1

deny contains lib.finding("sovereignty.consent_required", lib.address(d, record), msg, fix) if {
	some d
	record := lib.exposed[d]
	lib.restricted(record)
	lib.public(record)
	problem := lib.consent_problem(record)

	msg := concat("", [
		"dataset ", d, " is ", lib.restriction(record), " and ", concat(", ", lib.exposing_addresses(d)),
		" would expose it publicly, but ", problem,
	])
	fix := "add spec.care.consent with authority and reference (and a future expires date), or set spec.care.visibility: internal"
}
