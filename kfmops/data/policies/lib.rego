# Helpers shared by the default kfmops policies, over the plan JSON (`kfmops show PLAN --format json`).
#
# This package holds no deny/warn rule of its own: kfmops, `opa eval` and `conftest test` read findings
# only from package `kfmops` (care.rego, sovereignty.rego, heritage.rego, provenance.rego).
#
# Written to run fast on rego-cpp (what kfmops embeds) as well as on OPA, for plans of 10,000 changes:
# - The plan is indexed once per evaluation: the change list is scanned into plain arrays of dataset
#   names, and records are joined to them with the built-in object.filter. Rules then iterate
#   name -> record objects. (rego-cpp looks up a key in a large object, and adds to a set, in time
#   linear in its size, so per-change lookups and sets built from changes are quadratic.)
# - Helper functions take a dataset's record, never its name: a function that looks a name up in
#   input.datasets costs a scan of all records per call.
# - A negated helper takes the parent object and looks the key up in its own body: `not
#   has_text(care, "label")`, never `not nonempty_string(care.label)`. When care.label is undefined,
#   OPA evaluates the latter to undefined (so the `not` fails), which would let missing metadata pass.
# - Messages are built with concat and text(), never with sprintf over strings: rego-cpp's sprintf
#   quotes, without escaping, a string that a built-in returned (concat, object.get's default).
# - A built-in is never given a value of the wrong type (care() and target() are always objects): OPA
#   turns a built-in error into undefined, which would let a broken record pass.
package kfmops_lib

import rego.v1

# ---------------------------------------------------------------------------------------------------
# Settings. kfmops passes kfmops.yaml `policy:` as data.kfmops.config; with opa or conftest, pass a
# data file holding {"kfmops": {"config": {...}}}. Each default lives here, so that plain
# `conftest test` needs no data file. Nested settings are read key by key (no object merge), so a
# partial setting such as {"h3_resolution": {"max": 10}} keeps the other defaults.

default config := {}

config := data.kfmops.config if is_object(data.kfmops.config)

setting(path, fallback) := object.get(config, path, fallback)

h3_min := setting(["h3_resolution", "min"], 7)

h3_max := setting(["h3_resolution", "max"], 9)

# Sovereignty statuses and CARE labels that make a dataset restricted: it may be exposed publicly
# only with a recorded, unexpired consent. `tribal` is included: tribally governed data needs the
# nation's consent to be published (CARE "Authority to control").
restricted_sovereignty := {s | some s in setting("restricted_sovereignty", ["tribal", "sovereign", "restricted"])}

restricted_labels := {label | some label in setting("restricted_labels", ["restricted", "community-use-only"])}

# Reference kinds that expose a dataset to the public: the STAC catalog (child link) and the search
# alias. The graph edge and the cache pointer are internal.
exposing_kinds := {k | some k in setting("exposing_kinds", ["stac", "search"])}

consent_warn_days := setting("consent_warn_days", 30)

# The date consent expiry is judged against: setting `today` (YYYY-MM-DD, for reproducible runs)
# or the current UTC date. kfmops evaluates policy again at apply time, so a consent that expires
# between plan and apply still blocks the apply.
today := d if {
	d := setting("today", null)
	is_date(d)
} else := date_of(time.now_ns())

warn_horizon := date_of(time.add_date(time.parse_ns("2006-01-02", today), 0, 0, consent_warn_days))

date_of(ns) := sprintf("%04d-%02d-%02d", time.date(ns))

# A YYYY-MM-DD date, or a timestamp that starts with one (its first 10 characters are compared).
is_date(x) if {
	is_string(x)
	regex.match(`^[0-9]{4}-[0-9]{2}-[0-9]{2}`, x)
}

nonempty_string(x) if {
	is_string(x)
	trim_space(x) != ""
}

has_text(obj, key) if nonempty_string(obj[key])

# A value as message text: a string as it is, anything else as JSON.
text(x) := x if {
	is_string(x)
} else := sprintf("%v", [x])

# ---------------------------------------------------------------------------------------------------
# The plan, indexed by dataset.

moving_actions := {"create", "update", "import"}

# One dataset name per change that moves a pointer (create or update) or brings a live one under
# management (import: kfmops then keeps it pointing there, so it is judged the same way). Deletes,
# forgets and no-ops never trigger the target-version rules: deleting a restricted dataset's public
# alias is fine.
moving_names := [c.dataset |
	some c in input.changes
	moving_actions[c.action]
	is_string(c.dataset)
]

# [dataset, address] of each change that exposes a dataset publicly (create, update or import of a
# reference of an exposing kind).
exposing_changes := [[c.dataset, c.address] |
	some c in input.changes
	moving_actions[c.action]
	exposing_kinds[c.kind]
	is_string(c.dataset)
]

exposing_names := [pair[0] | some pair in exposing_changes]

# Desired records of the datasets in the plan: name -> {address, version, target, care, ...}.
records := object.get(input, "datasets", {})

# Datasets a moving change names but the plan holds no record for. The planner always writes one;
# if it did not, the dataset's CARE metadata and provenance are missing, which is a deny, not a skip.
# The per-name lookup only runs when the counts show that some record is missing.
unrecorded := [d |
	count(object.filter(records, moving_names)) < distinct_count(moving_names)
	some d in moving_names
	not records[d]
]

unrecorded_records := {d: {} | some d in unrecorded}

# name -> record of every dataset the plan touches (an unrecorded one has an empty record), of those
# whose pointer it moves, and of those it exposes publicly.
touched := object.union(records, unrecorded_records)

moving := object.union(object.filter(records, moving_names), unrecorded_records)

exposed := object.filter(touched, exposing_names)

distinct_count(names) := count(sorted) - count([i | some i; sorted[i] == sorted[i - 1]]) if {
	sorted := sort(names)
}

care(record) := c if {
	c := record.care
	is_object(c)
} else := {}

target(record) := t if {
	t := record.target
	is_object(t)
} else := {}

target_id(record) := text(id) if {
	id := target(record).id
} else := text(v) if {
	v := record.version
} else := "(unknown)"

address(name, record) := a if {
	a := record.address
	is_string(a)
} else := concat("", ["dataset.", name])

# The addresses that expose dataset d, for a finding's message: only computed for datasets that
# break a rule, so the scan of exposing_changes is not repeated per dataset of the plan.
exposing_addresses(d) := sort([pair[1] | some pair in exposing_changes; pair[0] == d])

finding(rule, addr, msg, fix) := {"rule": rule, "address": addr, "msg": msg, "fix": fix}

# ---------------------------------------------------------------------------------------------------
# CARE, sovereignty and consent (each takes a dataset's record).

restricted(record) if restricted_sovereignty[care(record).sovereignty]

restricted(record) if restricted_labels[care(record).label]

# Visibility "internal" is the only value that does not expose; unset counts as public (fail closed).
public(record) if not internal(record)

internal(record) if care(record).visibility == "internal"

restriction(record) := concat("", [
	"restricted (sovereignty ", text(object.get(care(record), "sovereignty", "unset")),
	", label ", text(object.get(care(record), "label", "unset")), ")",
])

has_consent(record) if is_object(care(record).consent)

# Why the dataset has no valid consent; undefined when its consent is recorded and unexpired.
consent_problem(record) := "no consent is recorded (spec.care.consent)" if {
	not has_consent(record)
} else := "spec.care.consent.authority is empty" if {
	not has_text(care(record).consent, "authority")
} else := "spec.care.consent.reference is empty" if {
	not has_text(care(record).consent, "reference")
} else := concat("", ["spec.care.consent.expires ", text(e), " is not a date (YYYY-MM-DD)"]) if {
	e := care(record).consent.expires
	not is_date(e)
} else := concat("", ["consent ", care(record).consent.reference, " expired on ", substring(e, 0, 10)]) if {
	e := care(record).consent.expires
	substring(e, 0, 10) < today
}

# ---------------------------------------------------------------------------------------------------
# Provenance and heritage masking of the target version (each takes a dataset's record).

has_provenance(record) if nonempty_string(target(record).provenance.source)

# Why the target version is not masked as heritage data must be; undefined when it is.
masking_problem(record) := concat("", ["version ", target_id(record), " records no masking"]) if {
	not has_masking(record)
} else := concat("", ["version ", target_id(record), " is masked with method ", text(m), ", not h3"]) if {
	m := object.get(target(record).masking, "method", "unset")
	m != "h3"
} else := concat("", ["version ", target_id(record), " records no H3 resolution"]) if {
	not has_resolution(record)
} else := concat("", [
	"version ", target_id(record), " uses H3 resolution ", text(r),
	", outside ", h3_band,
]) if {
	r := target(record).masking.resolution
	not between(r, h3_min, h3_max)
} else := concat("", ["version ", target_id(record), " does not record coordinates_removed: true"]) if {
	not coordinates_removed(record)
}

h3_band := concat("-", [text(h3_min), text(h3_max)])

has_masking(record) if is_object(target(record).masking)

has_resolution(record) if is_number(target(record).masking.resolution)

coordinates_removed(record) if target(record).masking.coordinates_removed == true

between(x, low, high) if {
	x >= low
	x <= high
}
