# CARE metadata: every dataset the plan moves declares a CARE label and a sovereignty status.
# Missing metadata is a deny, never a skip.
package kfmops

import data.kfmops_lib as lib
import rego.v1

deny contains lib.finding("care.label_required", lib.address(d, record), msg, fix) if {
	some d
	record := lib.touched[d]
	not lib.has_text(lib.care(record), "label")
	msg := concat("", ["dataset ", d, " has no CARE label"])
	fix := "add spec.care.label (e.g. open, attribution, community-use-only, restricted)"
}

deny contains lib.finding("care.sovereignty_required", lib.address(d, record), msg, fix) if {
	some d
	record := lib.touched[d]
	not lib.has_text(lib.care(record), "sovereignty")
	msg := concat("", ["dataset ", d, " has no sovereignty status"])
	fix := "add spec.care.sovereignty: none, tribal, sovereign or restricted"
}

# A consent that is about to lapse: the first plan after it expires will be denied.
warn contains lib.finding("care.consent_expiring", lib.address(d, record), msg, fix) if {
	some d
	record := lib.touched[d]
	expires := lib.care(record).consent.expires
	lib.is_date(expires)
	day := substring(expires, 0, 10)
	day >= lib.today
	day <= lib.warn_horizon
	msg := concat("", ["consent ", lib.text(lib.care(record).consent.reference), " for dataset ", d, " expires on ", day])
	fix := "renew the consent with its authority and update spec.care.consent.expires"
}
