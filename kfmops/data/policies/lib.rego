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

# Sensitivity levels of the KFM heritage standard (spec.care.sensitivity): each with its method
# (h3: H3 cells within a resolution band; region-only: region polygons, no cells or points; concealed:
# no geometry at all) and, for h3, its band. A setting replaces one level at a time.
default_levels := {
	"public": {"method": "h3", "min": 7, "max": 8, "meaning": "generalized public sites"},
	"default": {"method": "h3", "min": 7, "max": 7, "meaning": "sensitivity not stated"},
	"restricted": {"method": "h3", "min": 6, "max": 7, "meaning": "restricted sites"},
	"indigenous": {"method": "h3", "min": 4, "max": 5, "meaning": "Indigenous cultural places"},
	"regional": {"method": "region-only", "meaning": "known only by region"},
	"sacred": {"method": "concealed", "meaning": "burial and sacred sites"},
}

levels := object.union(default_levels, setting("sensitivity_levels", {}))

# The fewest sites one published H3 cell may hold (k-anonymity of aggregated heritage data).
min_sites_per_cell := setting("min_sites_per_cell", 3)

# Sovereignty statuses that make a dataset Indigenous-context: its sensitivity defaults to restricted,
# and its consent must come from its governing nation (spec.care.authority).
indigenous_sovereignty := {s | some s in setting("indigenous_sovereignty", ["tribal", "sovereign"])}

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
	exposes(c)
]

# A STAC part exposes only when it links the dataset from the catalog (a `child` link); an internal or
# withdrawn dataset's STAC part keeps its versions linked to each other, out of the public catalog.
exposes(c) if c.kind != "stac"

exposes(c) if {
	c.kind == "stac"
	lists_child(c.after)
}

lists_child(value) if {
	some fields in value
	count(object.get(fields, "child", [])) > 0
}

# Changes of exposure: datasets whose CARE metadata differs from what was last applied, even when no
# reference moves (input.exposure). They are judged like a move; with exposing references they expose.
exposure := [e |
	some e in object.get(input, "exposure", [])
	is_string(e.dataset)
]

exposure_names := [e.dataset | some e in exposure]

exposure_exposing := [[e.dataset, r.address] |
	some e in exposure
	some r in object.get(e, "references", [])
	exposing_kinds[r.kind]
]

exposing_names := array.concat([pair[0] | some pair in exposing_changes], [pair[0] | some pair in exposure_exposing])

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

# name -> record of every dataset whose target version or exposure the plan judges: moving ones, and
# those whose CARE metadata changed.
judged := object.union(moving, object.filter(records, exposure_names))

# name -> record of the judged datasets whose locations are sensitive (what the heritage rules iterate).
sensitive_judged := {d: record |
	some d
	record := judged[d]
	sensitive(record)
}

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
exposing_addresses(d) := sort(array.concat(
	[pair[1] | some pair in exposing_changes; pair[0] == d],
	[pair[1] | some pair in exposure_exposing; pair[0] == d],
))

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

consent(record) := c if {
	c := care(record).consent
	is_object(c)
} else := {}

day(x) := substring(x, 0, 10)

# Why the dataset has no binding consent; undefined when it has one. A consent binds when it names an
# authority and a reference, its authority is the dataset's governing authority (spec.care.authority;
# an Indigenous-context dataset must name one), it is not revoked (a Consent document with `revoked:`),
# and granted <= today < expires (granted is required; expires is optional).
consent_problem(record) := "no consent is recorded (spec.care.consent)" if {
	not has_consent(record)
} else := "spec.care.consent.authority is empty" if {
	not has_text(consent(record), "authority")
} else := "spec.care.consent.reference is empty" if {
	not has_text(consent(record), "reference")
} else := concat("", [
	"consent ", consent(record).reference, " was revoked on ", text(consent(record).revoked),
	" (", text(object.get(consent(record), "revoked_by", "Consent document")), ")",
]) if {
	consent(record).revoked
} else := "the dataset names no governing authority (spec.care.authority) to hold its consent to" if {
	indigenous_context(record)
	not has_text(care(record), "authority")
} else := concat("", [
	"consent ", consent(record).reference, " was given by ", consent(record).authority,
	", not by the dataset's governing authority ", care(record).authority,
]) if {
	has_text(care(record), "authority")
	consent(record).authority != care(record).authority
} else := concat("", ["consent ", consent(record).reference, " records no granted date (spec.care.consent.granted)"]) if {
	not has_text(consent(record), "granted")
} else := concat("", ["spec.care.consent.granted ", text(g), " is not a date (YYYY-MM-DD)"]) if {
	g := consent(record).granted
	not is_date(g)
} else := concat("", [
	"consent ", consent(record).reference, " is granted from ", day(consent(record).granted), ", after today (", today, ")",
]) if {
	day(consent(record).granted) > today
} else := concat("", ["spec.care.consent.expires ", text(e), " is not a date (YYYY-MM-DD)"]) if {
	e := consent(record).expires
	not is_date(e)
} else := concat("", ["consent ", consent(record).reference, " expired on ", day(e)]) if {
	e := consent(record).expires
	day(e) <= today
}

# Steward review: restricted, Indigenous-context and sensitive data move only with review: approved.
needs_review(record) if restricted(record)

needs_review(record) if indigenous_context(record)

needs_review(record) if sensitive(record)

reviewed(record) if care(record).review == "approved"

# How a change of CARE metadata lowers protection (before and after are spec.care objects); each reason
# is a string. Raising protection, or exposing more (judged by the consent rule), is not listed here.
lowered(e) := [reason |
	some check in [
		heritage_dropped(e), restriction_dropped(e), sensitivity_lowered(e),
	]
	some reason in check
]

heritage_dropped(e) := ["heritage: true was dropped"] if {
	e.before.heritage == true
	not e.after.heritage == true
} else := []

restriction_dropped(e) := [concat("", [
	"relabelled from ", restriction({"care": e.before}), " to ",
	text(object.get(e.after, "label", "unset")), "/", text(object.get(e.after, "sovereignty", "unset")),
])] if {
	restricted({"care": e.before})
	not restricted({"care": e.after})
} else := []

sensitivity_lowered(e) := [concat("", [
	"sensitivity lowered from ", level_text({"care": e.before}), " to ", level_text({"care": e.after}),
])] if {
	sensitive({"care": e.before})
	strictness({"care": e.after}) < strictness({"care": e.before})
} else := []

# How strict a level is: concealed over region-only over H3 bands, a coarser band stricter.
strictness(record) := 100 if {
	method(record) == "concealed"
} else := 50 if {
	method(record) == "region-only"
} else := 16 - level(record).max

# A waiver lets one rule's finding for one dataset pass as a warning until it expires. It names the rule,
# the authority that granted it (the dataset's governing authority, when it has one), a reference and an
# expiry; only rules listed in waivable_rules can be waived.
waivable_rules := {r | some r in setting("waivable_rules", ["care.protection_lowered"])}

waivers(record, rule) := [w |
	some w in object.get(care(record), "waivers", [])
	w.rule == rule
	waivable_rules[rule]
	has_text(w, "reference")
	has_text(w, "authority")
	object.get(care(record), "authority", w.authority) == w.authority
	is_date(w.expires)
	today < day(w.expires)
]

waived(record, rule) if count(waivers(record, rule)) > 0

waiver_text(record, rule) := concat("", [
	"waived by ", w.authority, " (", w.reference, ") until ", day(w.expires),
]) if {
	w := waivers(record, rule)[0]
}

# ---------------------------------------------------------------------------------------------------
# Provenance of the target version (takes a dataset's record).

has_provenance(record) if nonempty_string(target(record).provenance.source)

# ---------------------------------------------------------------------------------------------------
# Sensitivity of heritage data, judged against the facts read from the data (input.facts).

# A dataset whose locations are sensitive: heritage, or a stated sensitivity level.
sensitive(record) if care(record).heritage == true

sensitive(record) if has_text(care(record), "sensitivity")

indigenous_context(record) if indigenous_sovereignty[care(record).sovereignty]

# The level a dataset is held to: the stated one; the strictest (sacred) when the stated one is unknown;
# restricted for Indigenous-context data that states none; otherwise the default (r7).
sensitivity(record) := s if {
	s := care(record).sensitivity
	levels[s]
} else := "sacred" if {
	has_text(care(record), "sensitivity")
} else := "restricted" if {
	indigenous_context(record)
} else := "default"

level(record) := l if {
	l := levels[sensitivity(record)]
	is_object(l)
} else := {"method": "concealed"}

method(record) := text(object.get(level(record), "method", "concealed"))

band(record) := concat("-", [text(level(record).min), text(level(record).max)]) if {
	method(record) == "h3"
} else := method(record)

level_text(record) := concat("", ["sensitivity ", sensitivity(record), " (", method(record), " ", band(record), ")"])

# The facts of dataset d's target version; an entry that is missing counts as not gathered.
facts(d) := f if {
	f := input.facts[d]
	is_object(f)
} else := {"status": "unavailable", "problem": "no facts were gathered"}

gathered(f) if f.status == "gathered"

fact_count(f, kind) := n if {
	n := f.geometries[kind]
	is_number(n)
} else := 0

# Why the data of the target version breaks its level; undefined when it keeps it. Each names the fact.
data_problem(f, record) := concat("", ["facts of version ", target_id(record), " could not be gathered: ", text(f.problem)]) if {
	not gathered(f)
} else := concat("", ["version ", target_id(record), " links no STAC items (facts: items 0), so its locations cannot be checked"]) if {
	f.items == 0
} else := concat("", [
	"version ", target_id(record), " holds ", text(fact_count(f, "exact")),
	" exact point location(s) (facts: geometries.exact ", text(fact_count(f, "exact")), ")",
]) if {
	fact_count(f, "exact") > 0
}

# Why the data breaks the level's method; undefined when it keeps it.
method_problem(f, record) := concat("", [
	"version ", target_id(record), " holds H3 cells at resolution ", text(f.finest_resolution),
	" (facts: h3_resolutions ", text(f.h3_resolutions), "), finer than ", level_text(record),
]) if {
	method(record) == "h3"
	is_number(f.finest_resolution)
	f.finest_resolution > level(record).max
} else := concat("", [
	"version ", target_id(record), " holds H3 cells at resolution ", text(f.coarsest_resolution),
	" (facts: h3_resolutions ", text(f.h3_resolutions), "), outside ", level_text(record),
]) if {
	method(record) == "h3"
	is_number(f.coarsest_resolution)
	f.coarsest_resolution < level(record).min
} else := concat("", [
	"version ", target_id(record), " declares H3 resolution ", text(r),
	" in its STAC documents (facts: declared_h3_resolutions ", text(f.declared_h3_resolutions), "), outside ", level_text(record),
]) if {
	method(record) == "h3"
	some r in f.declared_h3_resolutions
	not between(r, level(record).min, level(record).max)
} else := concat("", [
	"version ", target_id(record), " holds ", text(n), " geometries that are neither H3 cells nor empty",
	" (facts: geometries.region ", text(n), "), but ", level_text(record), " publishes H3 cells only",
]) if {
	method(record) == "h3"
	n := fact_count(f, "region")
	n > 0
} else := concat("", [
	"version ", target_id(record), " holds H3 cells (facts: h3_resolutions ", text(f.h3_resolutions),
	"), but ", level_text(record), " publishes regions only",
]) if {
	method(record) == "region-only"
	count(f.h3_resolutions) > 0
} else := concat("", [
	"version ", target_id(record), " holds ", text(f.items - fact_count(f, "none")), " geometries",
	" (facts: geometry_types ", text(f.geometry_types), "), but ", level_text(record), " must hold none",
]) if {
	method(record) == "concealed"
	f.items > fact_count(f, "none")
} else := concat("", [
	"version ", target_id(record), " holds H3 cell ids (facts: h3_resolutions ", text(f.h3_resolutions),
	"), but ", level_text(record), " must hold no location",
]) if {
	method(record) == "concealed"
	count(f.h3_resolutions) > 0
} else := concat("", [
	"version ", target_id(record), " says kfm:coordinates_removed: false in its STAC documents",
	" (facts: declared_coordinates_removed ", text(f.declared_coordinates_removed), ")",
]) if {
	some removed in f.declared_coordinates_removed
	removed == false
}

# Why the aggregated data could single out a site; undefined when every cell holds enough sites.
k_problem(f, record) := concat("", [
	"version ", target_id(record), " has an H3 cell holding ", text(f.sites_per_cell_min),
	" site(s) (facts: sites_per_cell_min ", text(f.sites_per_cell_min), "), fewer than ", text(min_sites_per_cell),
]) if {
	is_number(f.sites_per_cell_min)
	f.sites_per_cell_min < min_sites_per_cell
}

# Why the masking the YAML declares for the target version does not match the level; undefined when it does.
masking_problem(record) := concat("", ["version ", target_id(record), " records no masking"]) if {
	not has_masking(record)
} else := concat("", [
	"version ", target_id(record), " is masked with method ", text(m), ", not ", method(record),
]) if {
	m := object.get(target(record).masking, "method", "unset")
	m != method(record)
} else := concat("", ["version ", target_id(record), " records no H3 resolution"]) if {
	method(record) == "h3"
	not has_resolution(record)
} else := concat("", [
	"version ", target_id(record), " declares H3 resolution ", text(r), ", outside ", level_text(record),
]) if {
	method(record) == "h3"
	r := target(record).masking.resolution
	not between(r, level(record).min, level(record).max)
} else := concat("", ["version ", target_id(record), " does not record coordinates_removed: true"]) if {
	not coordinates_removed(record)
}

has_masking(record) if is_object(target(record).masking)

has_resolution(record) if is_number(target(record).masking.resolution)

coordinates_removed(record) if target(record).masking.coordinates_removed == true

between(x, low, high) if {
	x >= low
	x <= high
}
