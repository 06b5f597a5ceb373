"""The sections of the HTML report that are tables: the regressions and improvements the
regression check stored for the run, its failures, and its provenance (what ran, where,
with which files).
"""

from __future__ import annotations

from fleet import __version__
from fleet.results.record import FieldValue, Record, tag
from fleet.results.report_cells import e, table, when
from fleet.results.report_model import (
    FLAG_COLUMNS,
    Report,
    cell,
    flag_cells,
    variant_label,
    verdict,
)


def flags_section(report: Report) -> str:
    if not report.flags:
        note = (
            "No regression or improvement stored for this run (the regression check stores"
            " one `regression` record for each; a run not checked has none)."
        )
        return f'<p class="muted">{e(note)}</p>'
    rows = []
    for flag in report.sorted_flags():
        direction, *cells = flag_cells(flag, report.varying)
        rows.append(
            [
                f'<span class="{e(direction)}">{e(direction)}</span>',
                *(e(text) for text in cells),
                f'<span class="msg">{e(flag.fields.get("message", ""))}</span>',
            ]
        )
    return table([*FLAG_COLUMNS, "message"], rows, numeric=(4, 5, 6))


def failures_section(report: Report) -> str:
    rows = [
        [
            e(r.tags.get("device", "?")),
            e(variant_label(r.tags, report.varying)),
            f'<span class="bad">{e(r.status)}</span>',
            e(r.fields.get("error_kind", "-")),
            e(r.fields.get("message", "")),
        ]
        for r in report.failures
    ]
    budgets = [
        [
            e(r.tags.get("device", "?")),
            e(variant_label(r.tags, report.varying)),
            e(r.fields.get("budget_failures", "") or "a budget was not met"),
        ]
        for r in report.results
        if verdict(r) == "fail"
    ]
    text = (
        "<p>Cases whose status is not ok: the device's verdict (timeout, out_of_memory, refused)"
        " or a failure of the run (error_kind says what went wrong with the device).</p>"
    )
    if not rows:
        text += '<p class="good">every case ran to the end</p>'
    else:
        listing = table(["device", "variant", "status", "error_kind", "message"], rows)
        text += listing.replace("<td>", '<td class="msg">')
    if budgets:
        text += "<h3>Budgets not met</h3>" + table(["device", "variant", "budgets"], budgets)
    return text


_AGENT_COLUMNS = ("device", "agent_version", "runtime", "runtime version", "python", "numpy")


def _fleet_version(of_run: FieldValue | None) -> str:
    this = e(f"{__version__} (this report)")
    if of_run is None:
        return f'{this}; <span class="muted">the run\'s own is not stored with it</span>'
    return f"{e(of_run)} (the run); {this}"


def provenance_section(report: Report) -> str:
    run = report.run
    summary = report.summary
    fields = dict(summary.fields) if summary is not None else {}
    spec = report.spec
    suite_hash = spec.get("suite_sha256") or next(
        (str(v) for k, v in sorted(fields.items()) if k.startswith("suite_") and "sha" in k), None
    )
    fleet_version = fields.get("fleet_version")
    overview = [
        ["run", f"<code>{e(run.run_id)}</code>"],
        [
            "suite",
            e(run.suite) + (f" (<code>{e(spec['suite'])}</code>)" if "suite" in spec else ""),
        ],
        [
            "suite file sha256",
            f'<span class="hash">{e(suite_hash)}</span>'
            if suite_hash
            else '<span class="muted">not stored with this run</span>',
        ],
        ["fleet version", _fleet_version(fleet_version)],
        [
            "agent zipapp sha256",
            f'<span class="hash">{e(spec["agent_sha256"])}</span>'
            if spec.get("agent_sha256")
            else '<span class="muted">not stored with this run</span>',
        ],
        ["started", e(when(run.started_ns))],
        ["finished", e(when(run.finished_ns))],
        ["exit code", e("running" if run.exit_code is None else run.exit_code)],
    ]
    for name in ("inventory", "devices", "parallel", "rerun_of"):
        if spec.get(name) is not None:
            overview.append([e(f"run spec: {name}"), f"<code>{e(spec[name])}</code>"])
    data = spec.get("data")
    if isinstance(data, dict):
        for path, sha in sorted(data.items()):
            overview.append([e(f"data file sha256: {path}"), f'<span class="hash">{e(sha)}</span>'])
    for name in sorted(fields):
        if name not in ("run_id", "exit_code") and name != "fleet_version":
            overview.append([e(f"run record: {name}"), e(cell(fields[name]))])

    per_device = []
    for device in report.devices:
        records = [s.record for s in report.results_on(device)]

        def distinct(name: str, records: list[Record] = records) -> str:
            values = sorted({str(r.fields[name]) for r in records if name in r.fields})
            return e(", ".join(values)) if values else '<span class="muted">-</span>'

        per_device.append(
            [
                e(device),
                f'<span class="hash">{distinct("agent_version")}</span>',
                distinct("runtime_package"),
                distinct("runtime_version"),
                distinct("python_version"),
                distinct("numpy_version"),
            ]
        )
    artifacts: dict[tuple[str, str], set[str]] = {}
    sizes: dict[tuple[str, str], float] = {}
    for record in report.results:
        key = (
            record.tags.get("model", "?"),
            tag(record.tags, "variant") or "?",
        )
        sha = record.fields.get("model_sha256")
        artifacts.setdefault(key, set())
        if sha:
            artifacts[key].add(str(sha))
        size = record.number("model_size_mb")
        if size is not None:
            sizes[key] = size
    artifact_rows = [
        [
            e(model),
            e(variant),
            "<br>".join(f'<span class="hash">{e(s)}</span>' for s in sorted(shas))
            or '<span class="muted">not stored</span>',
            e(cell(sizes.get((model, variant)), ".2f")),
        ]
        for (model, variant), shas in sorted(artifacts.items())
    ]
    facts_names = sorted(
        {
            name
            for record in report.device_facts.values()
            for name in (*record.tags, *record.fields)
            if name not in ("run_id", "suite", "device")
        }
    )
    fact_devices = [d for d in report.devices if d in report.device_facts]
    fact_devices += sorted(set(report.device_facts) - set(fact_devices))
    fact_rows = []
    for name in facts_names:
        row = [e(name)]
        for device in fact_devices:
            record = report.device_facts[device]
            value = record.tags.get(name, record.fields.get(name))
            row.append(e(cell(value)))
        fact_rows.append(row)
    facts = (
        table(["fact", *fact_devices], fact_rows)
        if fact_devices
        else '<p class="muted">no device records stored for this run</p>'
    )
    return (
        table(["", ""], overview)
        + "<h3>Agent and runtimes, per device</h3>"
        + table(_AGENT_COLUMNS, per_device)
        + "<h3>Artifacts</h3>"
        + table(["model", "variant", "model_sha256", "model_size_mb"], artifact_rows, (3,))
        + "<h3>Device facts (what each agent's sysinfo saw)</h3>"
        + facts
    )
