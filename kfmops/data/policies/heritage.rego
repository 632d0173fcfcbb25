# Cultural heritage locations: a dataset with spec.care.heritage: true may only point at a version
# generalized to H3 cells within the configured resolution band (default 7-9) with exact coordinates
# removed. Checked whenever the plan moves the dataset's pointer (create or update).
package kfmops

import data.kfmops_lib as lib
import rego.v1

deny contains lib.finding("heritage.masking_required", lib.address(d, record), msg, fix) if {
	some d
	record := lib.moving[d]
	lib.care(record).heritage == true
	problem := lib.masking_problem(record)
	msg := concat("", ["heritage dataset ", d, " would point at an unmasked version: ", problem])
	fix := concat("", [
		"point spec.version at a version with masking {method: h3, resolution: ", lib.h3_band,
		", coordinates_removed: true}",
	])
}
