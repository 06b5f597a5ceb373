"""`fleet convert` and `fleet model card`: the variant matrix of one model, and what a file is."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from fleet.cli import output
from fleet.cli.options import json_option
from fleet.results.tables import format_table

if TYPE_CHECKING:
    from fleet.artifacts import Artifact, Failed

_FILE = click.Path(exists=True, dir_okay=False, path_type=Path)


class _VariantsOption(click.Option):
    """`--to`, whose help lists the known variants: fleet.artifacts loads numpy, so it is
    imported only when this help is shown, not whenever the CLI starts."""

    def get_help_record(self, ctx: click.Context) -> tuple[str, str] | None:
        from fleet.artifacts.variant import KNOWN

        self.help = f"Comma-separated variants; known: {', '.join(KNOWN)}."
        return super().get_help_record(ctx)


@click.command()
@click.argument("source", type=_FILE)
@click.option(
    "--to",
    "variants",
    cls=_VariantsOption,
    default="onnx:fp16,onnx:int8,tflite:fp32,tflite:fp16,tflite:int8",
    show_default=True,
)
@click.option(
    "--calibration",
    type=_FILE,
    help="Samples (.npz, key 'inputs') for static int8; without it int8 is dynamic.",
)
@click.option(
    "--dataset",
    type=_FILE,
    help="Test set (.npz: 'inputs', optional 'labels') to measure each variant against FP32.",
)
@json_option
def convert(
    source: Path, variants: str, calibration: Path | None, dataset: Path | None, as_json: bool
) -> None:
    """Convert SOURCE (.onnx) to each variant; converted files are cached by content.

    Every variant that can be made is made and listed; the failed ones are listed after the
    table with the reason, and the command then exits 1."""
    from fleet.artifacts import Failed, convert_all, parse_list

    done = convert_all(source, parse_list(variants), calibration=calibration, dataset=dataset)
    if as_json:
        output.echo_json({"source": str(source), "variants": [_made(a) for a in done]})
        raise SystemExit(1 if any(isinstance(a, Failed) for a in done) else 0)
    columns = ["variant", "precision", "size_mb", "params", "sha256", "fidelity", "drop_pp", "path"]
    rows, failed = [], []
    for artifact in done:
        if isinstance(artifact, Failed):
            failed.append(f"FAILED {artifact.variant}: {artifact.reason}")
            rows.append([str(artifact.variant), *["-"] * 4, "FAILED", "-", "-"])
            continue
        fidelity: Mapping[str, Any] = artifact.card.fidelity or {}
        rows.append(
            [
                str(artifact.variant),
                artifact.card.precision,
                f"{artifact.card.model_size_mb:.3f}",
                str(artifact.card.params),
                artifact.sha256[:12],
                _fidelity(fidelity),
                _number(fidelity.get("accuracy_drop_pp"), "{:+.2f}"),
                str(artifact.path),
            ]
        )
    click.echo(format_table(columns, rows))
    for line in failed:
        click.echo(line, err=True)
    if failed:
        raise SystemExit(1)


def _made(artifact: Artifact | Failed) -> dict[str, Any]:
    """A variant in `fleet convert --json`: the file and its card, or why it failed."""
    from fleet.artifacts import Failed

    if isinstance(artifact, Failed):
        return {"variant": str(artifact.variant), "ok": False, "reason": artifact.reason}
    return {
        "variant": str(artifact.variant),
        "ok": True,
        "path": str(artifact.path),
        "sha256": artifact.sha256,
        "card": artifact.card.to_dict(),
    }


def _fidelity(measured: Mapping[str, Any]) -> str:
    """The measure that fits the model's task, in one cell."""
    if not measured:
        return "-"
    if "error" in measured:
        return "not-comparable"
    if measured.get("constant_output"):
        return "constant-output"
    if measured.get("task") == "embedding":
        return _number(measured.get("cosine_mean"), "cos={:.4f}")
    if measured.get("task") == "tensor":
        return _number(measured.get("snr_db"), "snr={:.1f}dB")
    return _number(measured.get("agreement_top1"), "{:.2%}")


@click.group()
def model() -> None:
    """Look at model files."""


@model.command()
@click.argument("file", type=_FILE)
@click.option("--json", "as_json", is_flag=True, help="Print the card as JSON.")
def card(file: Path, as_json: bool) -> None:
    """Print the model card of FILE (.onnx or .tflite; a cached artifact shows its stored card)."""
    from fleet.artifacts import read_card

    data = read_card(file).to_dict()
    if as_json:
        click.echo(json.dumps(data, indent=2, sort_keys=True))
        return
    for key, value in data.items():
        if key in ("inputs", "outputs"):
            value = ", ".join(f"{t['name']} {t['dtype']} {t['shape']}" for t in value)
        elif key == "ops":
            value = ", ".join(f"{op} {n}" for op, n in value.items())
        elif key in ("weight_types", "weight_bytes", "fidelity"):
            value = ", ".join(f"{k} {_number(v, '{:.4g}')}" for k, v in value.items())
        elif key == "model_size_mb":
            value = f"{value:.3f}"
        click.echo(f"{key:<16} {value}")


def _number(value: Any, fmt: str) -> str:
    return (
        fmt.format(value)
        if isinstance(value, int | float)
        else "-"
        if value is None
        else str(value)
    )
