# Provenance: the version a dataset's pointer moves to must record where it came from
# (provenance.source). Checked whenever the plan moves the pointer (create or update).
package kfmops

import data.kfmops_lib as lib
import rego.v1

deny contains lib.finding("provenance.required", lib.address(d, record), msg, fix) if {
	some d
	record := lib.moving[d]
	not lib.has_provenance(record)
	version := lib.target_id(record)
	msg := concat("", ["dataset ", d, " would point at version ", version, ", which records no provenance source"])
	fix := concat("", [
		"add provenance {source, activity} to version ", version,
		" in spec.versions, or point spec.version at a version that has it",
	])
}
