"""Training on a Parquet file (or a folder of them) larger than memory: every split streams.

The in-memory `TabularDataModule` reads the whole table. This one reads the file in pieces and
keeps nothing per row of the table:

1. the schema, for the column roles (`find_columns`, the same detection);
2. the split, decided from the keys only (time and label columns) by the same rule as
   `split_frame`, and kept compactly (`SplitRule`): for the time split, the first (time, row) of
   validation and of test, found by an exact radix selection over the time column (four passes
   of 16-bit histograms, then one to place the ties: a stable sort's boundaries, no per-row
   array); for the random (stratified) split, which draws rows, one uint8 code per row (1 byte
   a row, 20 MB at 20M rows);
3. a pass over the label and time columns: the label's values per split (the fraud value, the
   class counts, the class weights);
4. the feature statistics on the train rows: the numeric columns are read a few at a time
   (Parquet is columnar; `COLUMN_VALUES` train values each pass, checked batch by batch) and given
   to the same `FeatureSpec.fit` (exact medians and quartiles, as in memory: what grows with the
   table is one numeric column of the train rows, float32, during this pass; about 7 copies of
   it at the peak, 390 MB at 20M rows); categorical vocabularies are counted over record batches;
5. a pass that encodes a seeded sample of the train rows for the baselines (`BASELINE_ROWS`)
   and small samples of validation and test (`SAMPLE_ROWS`: the export's parity batch, the
   feature importance);
6. each epoch streams the train rows: Parquet row groups in a shuffled order, record batches
   encoded as they arrive, a shuffle buffer (`--data.shuffle_buffer` rows), batches of
   `--data.batch_size`; DataLoader workers take every n-th row group. Validation and test stream
   in file order in batches of `EVAL_BATCH` (`HeldOutStream`); the metrics keep what they need
   (torchmetrics' exact AUPRC/AUROC keep each row's probabilities and target, about 28 bytes a
   validation row; `split_scores`, the threshold and the baselines' scores, 5 bytes a row).

The `FeatureSpec` (the ONNX preprocessing and contract) has the same fields and, for the same
data, the same values as the in-memory path's; the split holds the same rows.
"""

from __future__ import annotations

import sys

import numpy as np
import polars as pl
import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from deepapps.apps.finance.fraud.data import TabularDataModule
from deepapps.apps.finance.fraud.features import LABELS, Encoded, FeatureSpec, encode, find_columns
from deepapps.apps.finance.fraud.parquet import (  # noqa: F401 (SplitRule, time_keys: re-exported)
    ParquetTable, SplitRule, parquet_files, split_rule, time_keys, wants_streaming,
)
from deepapps.apps.finance.fraud.tables import Columns, tidy_frame
from deepapps.core.data.class_weights import class_weights
from deepapps.core.errors import ConfigError, DataError

BASELINE_ROWS = 200_000  # train rows (a seeded uniform sample) the baselines are fitted on when streaming
SAMPLE_ROWS = 4096  # validation and test rows kept encoded (about; a seeded sample): parity batch, importance
EVAL_BATCH = 4096  # rows per validation/test batch (as the in-memory DataModule's)
COLUMN_VALUES = 2**23  # the statistics pass reads as many numeric columns at once as hold 8M train values
# (float32: 32 MiB, about 7 copies in FeatureSpec.fit); one column when the train split is larger


def tabular_datamodule(cfg) -> TabularDataModule:
    """The in-memory or the streaming DataModule, as `--data.streaming` says (the choice is printed)."""
    stream, why = wants_streaming(cfg)
    if str(cfg.streaming).lower() == "auto":
        print(f"deepapps: auto: --data.streaming {str(stream).lower()} ({why})", file=sys.stderr)
    return StreamingTabularDataModule(cfg) if stream else TabularDataModule(cfg)


class StreamingTabularDataModule(TabularDataModule):
    """A TabularDataModule whose splits stream from Parquet (see the module docstring).

    Attributes beyond the parent's: `sizes` (rows per split), `train_counts` (normal, fraud) of the
    whole train split, `rule` (the SplitRule); `encoded["train"]`/`y["train"]` hold the baseline sample,
    `encoded["val"]`/`encoded["test"]` small samples (the rows themselves stream: `split_batches`).
    """

    def __init__(self, cfg):
        super(TabularDataModule, self).__init__()  # LightningDataModule's, not the in-memory reader's
        import pyarrow.parquet as pq

        self.cfg, source = cfg, cfg.path
        files = parquet_files(source)
        if not files:
            raise ConfigError(f"--data.streaming: {source} is not a Parquet file or folder of Parquet files")
        if cfg.gan_oversample:
            raise ConfigError("--data.gan_oversample needs the train split in memory: use --data.streaming false")
        if cfg.group_columns:
            raise ConfigError("--data.group_columns needs the rows in memory: use --data.streaming false")
        if cfg.shuffle_buffer < cfg.batch_size:
            raise ConfigError("--data.shuffle_buffer must be at least --data.batch_size")
        self.files, self.read_notes = files, [f"streamed from {len(files)} Parquet file(s) in record batches"]
        self.frames: dict[str, pl.DataFrame] = {}  # the raw rows are never all in memory
        self.missing = list(cfg.missing_values)
        empty = tidy_frame(pl.from_arrow(pq.read_schema(files[0]).empty_table()), self.missing, numbers=False)
        self._names = dict(zip(empty.columns, pq.read_schema(files[0]).names))  # tidy name -> name in the file
        self.columns = find_columns(empty, source, cfg)
        for option, value, found in (("--data.label_column", cfg.label_column, self.columns.label),
                                     ("--data.time_column", cfg.time_column, self.columns.time)):
            if value == "auto":
                print(f"deepapps: auto: {option} {found or 'none'} (found by name or type)", file=sys.stderr)
        self.table = ParquetTable(files, self._names, self.missing)
        self.units, self.offsets, self.n_rows = self.table.units, self.table.offsets, self.table.n_rows
        if self.n_rows == 0:
            raise DataError(f"{source}: empty table (no rows)")
        self.keys = [k for k in (self.columns.label, self.columns.time) if k]
        self.rule = split_rule(self.table, Columns(label=self.columns.label, time=self.columns.time), cfg)
        self._count_labels(source)
        self.spec = self._fit_spec(source)
        self._encode_samples(source)
        self.labels, self.multilabel = LABELS, False
        self.n_synthetic, self._gan_seed, self._synthetic = 0, None, None

    # --- passes over the file -------------------------------------------------------------------

    def _read(self, columns: list[str], units=None):
        """Record batches of `columns` (tidy names) with the global row index of their first row."""
        return self.table.read(columns, units)

    def _count_labels(self, source: str) -> None:
        """The label's values per split: the fraud value (as `targets` picks it on train), the class counts."""
        c = self.columns
        values: list[dict] = [{}, {}, {}]
        for start, frame in self._read(self.keys):
            codes = self.rule.of(start, frame)
            labels = frame[c.label]
            if labels.null_count():
                raise DataError(f"{source}: label column {c.label!r} has {labels.null_count()} empty values")
            counted = pl.DataFrame({"code": codes, "label": labels}).group_by("code", "label").len()
            for code, label, count in counted.iter_rows():
                values[code][label] = values[code].get(label, 0) + count
        train = values[0]
        if len(train) != 2:
            raise DataError(f"{source}: label column {c.label!r} must have two classes, found {len(train)}: "
                            f"{list(train)[:5]}")
        self.positive = 1 if set(train) <= {0, 1} else min(train, key=train.get)  # {0, 1} holds False and True
        for k, seen in zip(SplitRule.CODES[1:], values[1:]):
            if len(seen) > 2 or (len(seen) == 2 and self.positive not in seen):
                raise DataError(f"{source}: label column {c.label!r} holds {', '.join(sorted(map(repr, seen))[:5])} "
                                f"in {k}; the fraud value {self.positive!r} is not one of them")
        counts = [np.array([sum(n for v, n in seen.items() if v != self.positive), seen.get(self.positive, 0)])
                  for seen in values]
        self.split_names = list(SplitRule.CODES)
        self.class_counts = dict(zip(SplitRule.CODES, counts))
        self.sizes = {k: int(n.sum()) for k, n in self.class_counts.items()}
        self.train_counts = self.class_counts["train"]

    def _targets(self, frame: pl.DataFrame) -> np.ndarray:
        return (frame[self.columns.label] == self.positive).cast(pl.Int64).to_numpy()

    def _fit_spec(self, source: str) -> FeatureSpec:
        """`FeatureSpec.fit` on the train rows: numerics a few columns at a time, vocabularies streamed."""
        c, cfg = self.columns, self.cfg
        log_columns = [n for n in c.numeric if "amount" in n.lower()] if cfg.log_columns is None else cfg.log_columns
        spec = FeatureSpec(numeric=list(c.numeric), categorical=list(c.categorical),
                           log=[n in log_columns for n in c.numeric], center=[], scale=[], vocab={},
                           ids=list(c.ids), time=c.time, label=c.label, positive=self.positive)
        per_pass = max(1, COLUMN_VALUES // max(1, self.sizes["train"]))  # numeric columns read together
        for i in range(0, len(c.numeric), per_pass):
            names = c.numeric[i:i + per_pass]
            part_spec = FeatureSpec(numeric=list(names), categorical=[], log=[], center=[], scale=[], vocab={})
            pieces = []  # the train values as float32 (what FeatureSpec.fit reads them as), checked batch by batch
            for start, frame in self._read([*names, *self.keys]):
                matrix, errors = _numeric_errors(frame.filter(pl.Series(self.rule.of(start, frame) == 0)), part_spec)
                if errors is not None:
                    raise DataError(f"{source}: train rows have bad values (first: {errors})")
                pieces.append(pl.DataFrame(matrix, schema=list(names)))
            columns = pl.concat(pieces, rechunk=False)
            del pieces
            some = FeatureSpec.fit(columns, Columns(None, None, numeric=names), self.positive, log_columns)
            spec.center.extend(some.center)
            spec.scale.extend(some.scale)
            del columns
        if c.categorical:
            counts: dict[str, dict[str, int]] = {name: {} for name in c.categorical}
            for start, frame in self._read([*c.categorical, *self.keys]):
                part = frame.filter(pl.Series(self.rule.of(start, frame) == 0))
                for name in c.categorical:
                    vc = part[name].cast(pl.String).drop_nulls().value_counts()
                    seen = counts[name]
                    for value, n in zip(vc[name].to_list(), vc["count"].to_list()):
                        seen[value] = seen.get(value, 0) + n
            for name, seen in counts.items():
                ranked = sorted(seen.items(), key=lambda kv: (-kv[1], kv[0]))
                spec.vocab[name] = [str(v) for v, n in ranked if n >= cfg.min_category_count]
        return spec

    def split_batches(self, split: str, units=None):
        """(row indices, encoded rows, their 0/1 targets) of `split` per record batch, in file order.

        Raises:
            DataError: rows of the split with values the features cannot read.
        """
        code = SplitRule.CODES.index(split)
        for start, frame in self._read([*self.columns.features, *self.keys], units=units):
            rows = np.flatnonzero(self.rule.of(start, frame) == code)
            if not len(rows):
                continue
            part = frame[rows]
            enc = encode(part, self.spec)
            if enc.bad.any():
                raise DataError(f"{self.cfg.path}: {int(enc.bad.sum())} {split} rows have bad values "
                                f"(first: {enc.first_error})")
            yield start + rows, enc, self._targets(part)

    def _encode_samples(self, source: str) -> None:
        """A seeded sample of train rows (the baselines) and of val and test rows (parity batch, importance)."""
        rng = np.random.default_rng(self.cfg.split_seed)
        want = {"train": BASELINE_ROWS, "val": SAMPLE_ROWS, "test": SAMPLE_ROWS}
        share = {k: min(1.0, want[k] / max(1, self.sizes[k])) for k in want}
        pieces: dict[str, list] = {k: [] for k in want}
        for start, frame in self._read([*self.columns.features, *self.keys]):
            codes = self.rule.of(start, frame)
            draw = rng.random(frame.height)
            for code, k in enumerate(SplitRule.CODES):
                rows = np.flatnonzero((codes == code) & (draw < share[k]))
                if len(rows):
                    pieces[k].append((encode(frame[rows], self.spec), self._targets(frame[rows])))
        self.encoded, self.y = {}, {}
        for k, parts in pieces.items():
            enc = _concat([p for p, _ in parts], self.spec)
            if enc.bad.any():
                raise DataError(f"{source}: {int(enc.bad.sum())} {k} rows have bad values (first: {enc.first_error})")
            self.encoded[k] = enc
            self.y[k] = np.concatenate([t for _, t in parts]) if parts else np.zeros(0, np.int64)

    # --- what the fit flow asks for ---------------------------------------------------------------

    def train_dataloader(self) -> DataLoader:
        return DataLoader(TrainStream(self), batch_size=None, num_workers=self.cfg.num_workers)

    def val_dataloader(self) -> DataLoader:
        return DataLoader(HeldOutStream(self, "val"), batch_size=None, num_workers=self.cfg.num_workers)

    def test_dataloader(self) -> DataLoader:
        return DataLoader(HeldOutStream(self, "test"), batch_size=None, num_workers=self.cfg.num_workers)

    def split_scores(self, scorers: dict, split: str) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """As the parent's, streamed: the scores and targets are gathered, the rows are not (5 bytes a row)."""
        y, scores = [], {name: [] for name in scorers}
        for _, enc, target in self.split_batches(split):
            y.append(target.astype(np.uint8))
            for name, score in scorers.items():
                scores[name].append(np.asarray(score(enc), np.float32))
        out = {name: np.concatenate(s) if s else np.zeros(0, np.float32) for name, s in scores.items()}
        return (np.concatenate(y) if y else np.zeros(0, np.uint8)).astype(np.int64), out

    def synthetic(self) -> Encoded:
        raise ConfigError("--data.gan_oversample needs the train split in memory: use --data.streaming false")

    def class_weights(self, mode: str | None) -> list[float] | None:
        """As the in-memory path's, from the counts of the whole train split."""
        return class_weights(mode, self.train_counts.copy())

    def summary(self) -> dict:
        out = super().summary()
        out["sizes"] = dict(self.sizes)
        out["class_counts"] = {k: {LABELS[0]: int(n[0]), LABELS[1]: int(n[1])} for k, n in self.class_counts.items()}
        kept = "split boundaries of the time order" if self.rule.codes is None else "a split code per row"
        out["notes"].append(f"streaming: every split streamed (shuffle buffer {self.cfg.shuffle_buffer} train rows; "
                            f"{kept}); baselines fitted on {len(self.y['train'])} sampled train rows")
        return out


class HeldOutStream(IterableDataset):
    """The validation or test rows of a StreamingTabularDataModule as (inputs..., target) batches, file order."""

    def __init__(self, dm: StreamingTabularDataModule, split: str):
        self.dm, self.split = dm, split

    def __len__(self) -> int:
        return (self.dm.sizes[self.split] + EVAL_BATCH - 1) // EVAL_BATCH

    def __iter__(self):
        dm, units = self.dm, np.arange(len(self.dm.units))
        worker = get_worker_info()
        if worker is not None:
            units = units[worker.id::worker.num_workers]
        pending: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
        held = 0
        for _, enc, target in dm.split_batches(self.split, units=units):
            pending.append((enc.numeric, enc.categorical, target))
            held += len(target)
            if held >= EVAL_BATCH:
                pending, held = yield from _emit(pending, None, EVAL_BATCH, keep=EVAL_BATCH - 1, spec=dm.spec)
        if pending:
            yield from _emit(pending, None, EVAL_BATCH, keep=0, spec=dm.spec, partial=True)


class TrainStream(IterableDataset):
    """The train rows of a StreamingTabularDataModule as shuffled (inputs..., target) batches."""

    def __init__(self, dm: StreamingTabularDataModule):
        self.dm = dm

    def __len__(self) -> int:
        return self.dm.sizes["train"] // self.dm.cfg.batch_size

    def __iter__(self):
        dm, batch = self.dm, self.dm.cfg.batch_size
        rng = np.random.default_rng(int(torch.randint(0, 2**31 - 1, ())))  # from the run's seed, new each epoch
        units = rng.permutation(len(dm.units))
        worker = get_worker_info()
        if worker is not None:
            units = units[worker.id::worker.num_workers]
        buffer: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
        held = 0
        for _, enc, target in dm.split_batches("train", units=units):
            buffer.append((enc.numeric, enc.categorical, target))
            held += len(target)
            if held >= dm.cfg.shuffle_buffer:
                buffer, held = yield from _emit(buffer, rng, batch, keep=dm.cfg.shuffle_buffer // 2, spec=dm.spec)
        yield from _emit(buffer, rng, batch, keep=0, spec=dm.spec)


def _emit(buffer, rng, batch: int, keep: int, spec: FeatureSpec, partial: bool = False):
    """Shuffle the buffer (rng None: keep the order), yield full batches until at most `keep` (+ < batch) rows
    remain (`partial`: and the last, shorter batch); return the rest."""
    if not buffer:
        return [], 0
    numeric, categorical, y = (np.concatenate(parts) for parts in zip(*buffer))
    if rng is not None:
        order = rng.permutation(len(y))
        numeric, categorical, y = numeric[order], categorical[order], y[order]
    n_out = len(y) if partial else max(0, (len(y) - keep) // batch) * batch
    for i in range(0, n_out, batch):
        out = [torch.from_numpy(numeric[i:i + batch])]
        if spec.categorical:
            out.append(torch.from_numpy(categorical[i:i + batch]))
        out.append(torch.from_numpy(y[i:i + batch]))
        yield tuple(out)
    rest = (numeric[n_out:], categorical[n_out:], y[n_out:])
    return ([rest] if len(rest[2]) else []), len(rest[2])


def _concat(parts: list[Encoded], spec: FeatureSpec) -> Encoded:
    if not parts:
        return Encoded(np.zeros((0, len(spec.numeric)), np.float32), np.zeros((0, len(spec.categorical)), np.int64),
                       pl.Series([], dtype=pl.String), {})
    unknown: dict[str, int] = {}
    for p in parts:
        for k, v in p.unknown.items():
            unknown[k] = unknown.get(k, 0) + v
    return Encoded(np.concatenate([p.numeric for p in parts]), np.concatenate([p.categorical for p in parts]),
                   pl.concat([p.errors for p in parts]), unknown)


def _numeric_errors(frame: pl.DataFrame, spec: FeatureSpec):
    from deepapps.apps.finance.fraud.features import numeric_matrix

    matrix, errors = numeric_matrix(frame, spec)
    errors = errors.drop_nulls()
    return matrix, (errors[0] if len(errors) else None)
