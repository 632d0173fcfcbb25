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
	day > lib.today
	day <= lib.warn_horizon
	msg := concat("", ["consent ", lib.text(lib.care(record).consent.reference), " for dataset ", d, " expires on ", day])
	fix := "renew the consent with its authority and update spec.care.consent.expires"
}

# Steward review: restricted, Indigenous-context and sensitive datasets move, or change their CARE
# metadata, only with spec.care.review: approved.
deny contains lib.finding("care.review_required", lib.address(d, record), msg, fix) if {
	some d
	record := lib.judged[d]
	lib.needs_review(record)
	not lib.reviewed(record)
	review := lib.text(object.get(lib.care(record), "review", "unset"))
	msg := concat("", ["dataset ", d, " is restricted, Indigenous-context or sensitive and its steward review is ", review])
	fix := "finish the steward review and set spec.care.review: approved"
}

# Lowering protection (dropping heritage: true, relabelling restricted data as open, lowering its
# sensitivity) is a change of exposure that needs a waiver from the dataset's authority, with an expiry.
deny contains lib.finding("care.protection_lowered", lib.address(e.dataset, record), msg, fix) if {
	some e in lib.exposure
	record := object.get(lib.records, e.dataset, {})
	reasons := lib.lowered(e)
	count(reasons) > 0
	not lib.waived(record, "care.protection_lowered")
	msg := concat("", ["dataset ", e.dataset, " lowers its protection: ", concat("; ", reasons)])
	fix := "keep the protection, or record the authority's decision as spec.care.waivers: [{rule: care.protection_lowered, authority, reference, expires}]"
}

warn contains lib.finding("care.protection_lowered", lib.address(e.dataset, record), msg, "") if {
	some e in lib.exposure
	record := object.get(lib.records, e.dataset, {})
	reasons := lib.lowered(e)
	count(reasons) > 0
	lib.waived(record, "care.protection_lowered")
	msg := concat("", [
		"dataset ", e.dataset, " lowers its protection (", concat("; ", reasons), "): ",
		lib.waiver_text(record, "care.protection_lowered"),
	])
}
