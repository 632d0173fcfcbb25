# Indigenous data sovereignty: a restricted dataset (sovereignty tribal, sovereign or restricted, or
# label restricted or community-use-only; configurable) may be exposed publicly only with a recorded,
# binding consent (lib.consent_problem: from its governing authority, granted, unexpired, not revoked).
# "Exposed" means the plan creates or updates its catalog child link or its search alias, or changes the
# CARE metadata of a dataset those references expose, while spec.care.visibility is public or unset.
# Deleting those references is always fine.
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
	fix := "record a consent from the dataset's governing authority (spec.care.authority): spec.care.consent {authority, reference, granted <= today, optional expires after today}, not revoked; or set spec.care.visibility: internal"
}
