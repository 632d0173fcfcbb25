# Cultural heritage locations, judged against the data, not the declaration. A sensitive dataset
# (spec.care.heritage: true, or a spec.care.sensitivity level) may only point at a version whose STAC
# documents keep its level (lib.levels: method h3 within the level's band, region-only, or concealed),
# hold no exact point location, put at least min_sites_per_cell sites in every H3 cell, and whose
# declared masking (spec.versions[].masking) says the same. Facts that could not be gathered deny.
# Checked whenever the plan moves the dataset's pointer or changes its CARE metadata.
package kfmops

import data.kfmops_lib as lib
import rego.v1

deny contains lib.finding("heritage.facts_required", lib.address(d, record), msg, fix) if {
	some d
	record := lib.sensitive_judged[d]
	f := lib.facts(d)
	problem := lib.data_problem(f, record)
	msg := concat("", ["sensitive dataset ", d, " (", lib.level_text(record), "): ", problem])
	fix := "publish a version whose STAC items hold H3 cells (or no geometry) and no exact coordinates, and point spec.version at it"
}

deny contains lib.finding("heritage.sensitivity_band", lib.address(d, record), msg, fix) if {
	some d
	record := lib.sensitive_judged[d]
	f := lib.facts(d)
	not lib.data_problem(f, record)
	problem := lib.method_problem(f, record)
	msg := concat("", ["sensitive dataset ", d, ": ", problem])
	fix := concat("", ["generalize the data to ", lib.level_text(record), " and point spec.version at that version"])
}

deny contains lib.finding("heritage.k_anonymity", lib.address(d, record), msg, fix) if {
	some d
	record := lib.sensitive_judged[d]
	f := lib.facts(d)
	lib.gathered(f)
	problem := lib.k_problem(f, record)
	msg := concat("", ["sensitive dataset ", d, ": ", problem])
	fix := "aggregate to coarser H3 cells, or leave out cells with fewer sites, until every cell holds enough sites"
}

deny contains lib.finding("heritage.masking_required", lib.address(d, record), msg, fix) if {
	some d
	record := lib.sensitive_judged[d]
	problem := lib.masking_problem(record)
	msg := concat("", ["sensitive dataset ", d, " would point at a version declared ", problem])
	fix := concat("", [
		"declare the version's masking as {method: ", lib.method(record), ", resolution within ", lib.band(record),
		", coordinates_removed: true} (as its data shows), or point spec.version at a version that has it",
	])
}
