"""convert(): one source ONNX model and a variant -> a cached artifact with its model card."""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from fleet.artifacts import onnx_variants, tflite_variants
from fleet.artifacts.artifact import Artifact
from fleet.artifacts.cache import ArtifactCache, request_key, sha256_file
from fleet.artifacts.card import ModelCard, declare, load_tflite, model_card
from fleet.artifacts.converter_env import last_lines
from fleet.artifacts.data import Samples, load_samples
from fleet.artifacts.fidelity import METHOD as FIDELITY_METHOD
from fleet.artifacts.fidelity import TASKS, fidelity, infer_task
from fleet.artifacts.variant import DEFAULT_BLOCK_SIZE, Variant
from fleet.errors import ConfigError, ConversionError, FleetError
from fleet_agent.protocol import InputSpec

log = logging.getLogger(__name__)

# Bumped when fleet changes how it converts, so older cached artifacts are not reused.
RECIPE = 2
FP32 = Variant("onnx", "fp32")


def convert(
    source: Path,
    variant: Variant,
    *,
    calibration: Path | None = None,
    cache: ArtifactCache | None = None,
    declared: Mapping[str, str] | None = None,
    dataset: Path | None = None,
    task: str | None = None,
) -> Artifact:
    """Convert `source` (.onnx) to `variant`, or find the same request done before.

    int8 without a mode is static (calibrated on `calibration`) when calibration data is
    given and dynamic otherwise; int4 without a block size takes DEFAULT_BLOCK_SIZE. With
    `dataset` the card gets `fidelity` against the source, by the measures of `task` (else the
    declared `task`, else one inferred from the data set and the outputs); without it the
    card has no fidelity, whatever an earlier data set measured.
    """
    cache = cache if cache is not None else ArtifactCache()
    if source.suffix != ".onnx":
        raise ConfigError(f"{source}: fleet converts ONNX models; give an .onnx file")
    task = task or (declared or {}).get("task")
    if task is not None and task not in TASKS:
        raise ConfigError(f"{source}: unknown task {task!r}; fleet knows {', '.join(TASKS)}")
    if variant.precision == "int8" and variant.mode is None:
        variant = replace(variant, mode="static" if calibration is not None else "dynamic")
    if variant.precision == "int4" and variant.block_size is None:
        variant = replace(variant, block_size=DEFAULT_BLOCK_SIZE)
    if variant.mode == "static" and calibration is None:
        raise ConfigError(
            f"{source}: {variant} calibrates on data; give a calibration .npz (--calibration,"
            " or 'calibration:' in the suite) or ask for the dynamic variant"
        )
    if variant == FP32:
        reference = None
        inputs = model_card(source).inputs  # also refuses a missing or corrupt file
        origin, source_sha = source, sha256_file(source)
    else:
        # Convert the cached FP32 copy, whose name is the hash of exactly these bytes.
        reference = convert(source, FP32, cache=cache)
        inputs = reference.card.inputs
        origin, source_sha = reference.path, reference.sha256
    float_inputs = all(spec["dtype"] in ("float32", "float16") for spec in inputs)
    if variant == Variant("tflite", "int8", "static") and not float_inputs:
        raise ConfigError(
            f"{source}: {variant} calibrates float inputs, but the model takes"
            f" {[(spec['name'], spec['dtype']) for spec in inputs]}; use tflite:int8-dynamic"
        )
    # One onnx2tf run writes every TFLite variant: with calibration data at hand it makes the
    # full-integer file too, so asking for tflite:fp32 then tflite:int8 runs it once.
    if variant.mode != "static" and not (variant.format == "tflite" and float_inputs):
        calibration = None
    samples = load_samples(calibration, inputs) if calibration else None
    calibration_sha = sha256_file(calibration) if calibration else None
    shapes = _fixed_shapes(source, variant, inputs, dataset, samples)
    key = request_key(_request(source_sha, variant, calibration_sha, shapes))
    with cache.lock(key):
        path = cache.lookup(key)
        counted = variant != FP32  # FP32 is the source itself: no converter runs for it
        if path is None:
            cache.stats.conversions += counted
            job = _Job(
                source, origin, source_sha, inputs, variant, samples, calibration_sha, shapes
            )
            path = _produce(job, cache, key)
        else:
            cache.stats.hits += counted
            log.info("%s %s: cached %s", source.name, variant, path.name)
    # Card updates (declared fields, fidelity on a new data set) need no lock: the sidecar is
    # replaced atomically and either writer's card is right.
    sidecar = cache.sidecar(path)
    try:
        card = ModelCard.from_dict(sidecar.get("card"))
    except ValueError as exc:  # damaged, or from a fleet whose cards differ: describe it again
        log.warning("%s: stored model card unusable (%s); reading the file again", path, exc)
        card = _artifact_card(path, variant, source, source_sha)
    if declared is not None and dict(declared) != card.declared:
        card = declare(card, declared, source)
    artifact = Artifact(path, path.stem, variant, card, source_sha)
    if dataset is not None:
        wanted = task or infer_task(card, load_samples(dataset, inputs))
        stored = card.fidelity
        if stored is None or (
            stored["dataset_sha256"],
            stored["method"],
            stored["task"],
        ) != (sha256_file(dataset), FIDELITY_METHOD, wanted):
            measured = fidelity(reference or artifact, artifact, dataset, wanted)
            card = replace(card, fidelity=measured)
            artifact = replace(artifact, card=card)
    as_json = card.to_dict()
    if as_json != sidecar.get("card"):
        sidecar.pop("declared", None)  # older sidecars listed the declared fields the card holds
        cache.write_sidecar(path, {**sidecar, "card": as_json})
    if dataset is None:  # the stored fidelity is of an earlier data set: not this request's
        artifact = replace(artifact, card=replace(card, fidelity=None))
    return artifact


def _artifact_card(file: Path, variant: Variant, source: Path, source_sha: str) -> ModelCard:
    """The card of a converted file: what it is, and what it was made from."""
    return replace(
        model_card(file), variant=variant.spec(), source=source.name, source_sha256=source_sha
    )


@dataclass(frozen=True)
class _Job:
    source: Path  # as the user named it, for messages
    origin: Path  # the bytes converted: the cached FP32 copy (the source itself for FP32)
    source_sha: str
    inputs: list[InputSpec]  # the source's, from its model card
    variant: Variant
    samples: Samples | None
    calibration_sha: str | None
    shapes: dict[str, list[int]] | None  # TFLite: fixed input shapes (tflite_variants)

    def describe(self) -> str:
        return f"{self.source} -> {self.variant}"


@dataclass(frozen=True)
class Failed:
    """A variant convert_all() could not make, and why (one line)."""

    variant: Variant
    reason: str


def convert_all(
    source: Path,
    variants: Sequence[Variant],
    *,
    calibration: Path | None = None,
    cache: ArtifactCache | None = None,
    declared: Mapping[str, str] | None = None,
    dataset: Path | None = None,
    task: str | None = None,
) -> list[Artifact | Failed]:
    """convert() for each variant in turn, in order: a variant that fails is a `Failed` and
    the others are still converted. What is wrong for every variant (the source, the data
    set) raises before any conversion."""
    cache = cache if cache is not None else ArtifactCache()
    reference = convert(source, FP32, cache=cache, declared=declared, dataset=dataset, task=task)
    done: list[Artifact | Failed] = []
    for variant in variants:
        try:
            done.append(
                reference
                if variant == FP32
                else convert(
                    source,
                    variant,
                    calibration=calibration,
                    cache=cache,
                    declared=declared,
                    dataset=dataset,
                    task=task,
                )
            )
        except FleetError as exc:
            log.info("%s %s: %s", source.name, variant, exc)
            done.append(Failed(variant, str(exc)))
    return done


def _fixed_shapes(
    source: Path,
    variant: Variant,
    inputs: list[InputSpec],
    dataset: Path | None,
    calibration: Samples | None,
) -> dict[str, list[int]] | None:
    """The shapes a TFLite conversion fixes dynamic dimensions to, from the samples at hand."""
    if variant.format != "tflite" or not tflite_variants.needs_fixed_shapes(inputs):
        return None
    samples = load_samples(dataset, inputs) if dataset is not None else calibration
    if samples is None:
        raise ConfigError(
            f"{source}: {variant} needs fixed input shapes ({[i['shape'] for i in inputs]} have"
            " dynamic dimensions besides the batch): give a data set (--dataset) to take them from"
        )
    return tflite_variants.fixed_shapes(inputs, samples)


def _request(
    source_sha: str,
    variant: Variant,
    calibration_sha: str | None,
    shapes: dict[str, list[int]] | None = None,
) -> dict[str, Any]:
    """Everything that decides the bytes of a converted file: the artifact cache's key.

    Calibration data counts only for static int8, the one variant it changes."""
    if variant.mode != "static":
        calibration_sha = None
    if variant == FP32:
        converter, version, options = "none", "", {}
    elif variant.format == "onnx":
        converter, version = "onnxruntime", onnx_variants.version()
        options = onnx_variants.options(variant)
    else:
        converter, version = "onnx2tf", tflite_variants.version()
        options = tflite_variants.options(variant.mode == "static", shapes)
    return {
        "source_sha256": source_sha,
        "variant": variant.spec(),
        "converter": converter,
        "converter_version": version,
        "options": options,
        "calibration_sha256": calibration_sha,
        "recipe": RECIPE,
    }


def _produce(job: _Job, cache: ArtifactCache, key: str) -> Path:
    """Run the converter; store every file it made (onnx2tf makes several at once)."""
    log.info("converting %s", job.describe())
    start = time.monotonic()
    with cache.scratch() as scratch:
        if job.variant == FP32:
            produced = {job.variant: job.origin}
        elif job.variant.format == "onnx":
            produced = {job.variant: _onnx(job, Path(scratch))}
        else:
            files = tflite_variants.convert(
                job.origin,
                job.inputs,
                job.samples,
                Path(scratch),
                job.describe(),
                cache.root / "logs" / f"{key}.log",
                job.variant.spec(),
                job.shapes,
            )
            produced = {Variant.parse(spec): path for spec, path in files.items()}
        seconds = time.monotonic() - start
        for made, file in produced.items():
            # The FP32 source is the user's own file: fidelity runs it when asked to.
            problem = None if made == FP32 else _load_problem(file)
            if problem and made == job.variant:
                raise ConversionError(f"{job.describe()}: {problem}")
            if problem:  # a sibling: not stored, so asking for it converts again and says why
                log.warning("%s: not keeping %s: %s", job.describe(), made, problem)
                continue
            request = _request(job.source_sha, made, job.calibration_sha, job.shapes)
            try:
                card = _artifact_card(file, made, job.source, job.source_sha)
            except ConfigError as exc:  # names the scratch file; the user needs the request
                raise ConversionError(
                    f"{job.describe()}: converted file is invalid: {exc}"
                ) from exc
            sidecar = {
                "request": request,
                "card": card.to_dict(),
                "conversion_s": seconds,
                "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            }
            cache.add(request_key(request), file, sidecar)
    log.info("converted %s in %.1f s", job.describe(), seconds)
    path = cache.lookup(key)
    if path is None:  # the converter ran but wrote nothing for this variant
        raise ConversionError(f"{job.describe()}: the converter wrote no {job.variant} file")
    return path


def _onnx(job: _Job, work: Path) -> Path:
    target = work / "model.onnx"
    try:
        origin = onnx_variants.weights_as_constants(job.origin, work)
        variant = job.variant
        if variant.precision == "fp16":
            onnx_variants.to_fp16(origin, target)
        elif variant.precision == "int4":
            assert variant.block_size is not None  # convert() sets the default
            onnx_variants.to_int4(origin, target, variant.block_size)
        elif variant.mode == "dynamic":
            onnx_variants.to_int8_dynamic(origin, work / "pre.onnx", target, variant.per_channel)
        else:
            assert job.samples is not None  # convert() insists on calibration for static int8
            onnx_variants.to_int8_static(
                origin,
                work / "pre.onnx",
                target,
                job.samples,
                job.inputs[0]["shape"][0],
                variant.per_channel,
            )
    except Exception as exc:  # onnxruntime's tools raise many unrelated types
        raise ConversionError(
            f"{job.describe()}: onnxruntime failed: {type(exc).__name__}: {last_lines(str(exc))}"
        ) from exc
    return target


def _load_problem(file: Path) -> str | None:
    """Why the runtime a device would use cannot load a converted file, or None."""
    try:
        if file.suffix == ".onnx":
            import onnxruntime as ort

            ort.InferenceSession(str(file), providers=["CPUExecutionProvider"])
        else:
            load_tflite(file).allocate_tensors()
    except Exception as exc:  # both runtimes raise several unrelated types
        return (
            f"the converted {file.suffix} file does not load:"
            f" {type(exc).__name__}: {last_lines(str(exc))}"
        )
    return None
