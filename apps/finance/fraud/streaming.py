"""Training on a Parquet file (or a folder of them) larger than memory: the train split streams.

The in-memory `TabularDataModule` reads the whole table. This one reads the file in pieces:

1. the schema, for the column roles (`find_columns`, the same detection);
2. a first pass over the keys only (label and time columns): the split is decided from them by
   the same `split_frame` (time-ordered or stratified), so the rows of each split are the rows the
   in-memory path picks;
3. the feature statistics on the train rows: the numeric columns are read a few at a time
   (Parquet is columnar; `COLUMN_BYTES` each pass) and given to the same `FeatureSpec.fit` (exact
   medians and quartiles, as in memory); categorical vocabularies are counted in a streaming
   pass over record batches;
4. a pass that encodes the validation and test rows (held in memory as float32/int64 arrays, the
   rows the threshold, the early stopping and the evaluation need) and a sample of train rows for
   the baselines (`BASELINE_ROWS`);
5. each epoch streams the train rows: Parquet row groups in a shuffled order, record batches
   encoded as they arrive, a shuffle buffer (`--data.shuffle_buffer` rows), batches of
   `--data.batch_size`; DataLoader workers take every n-th row group.

The `FeatureSpec` (the ONNX preprocessing and contract) has the same fields and, for the same
data, the same values as the in-memory path's.
"""

from __future__ import annotations

import sys

import numpy as np
import polars as pl
import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from deepapps.apps.finance.fraud.data import TabularDataModule
from deepapps.apps.finance.fraud.features import LABELS, Encoded, FeatureSpec, encode, find_columns, targets
from deepapps.apps.finance.fraud.parquet import parquet_files, wants_streaming
from deepapps.apps.finance.fraud.tables import Columns, split_frame, tidy_frame
from deepapps.core.data.class_weights import class_weights
from deepapps.core.errors import ConfigError, DataError

BASELINE_ROWS = 200_000  # train rows (a seeded uniform sample) the baselines are fitted on when streaming
READ_ROWS = 65_536  # rows per record batch read from Parquet
COLUMN_BYTES = 2**28  # the statistics pass reads as many numeric columns at once as fit in 256 MiB


def tabular_datamodule(cfg) -> TabularDataModule:
    """The in-memory or the streaming DataModule, as `--data.streaming` says (the choice is printed)."""
    stream, why = wants_streaming(cfg)
    if str(cfg.streaming).lower() == "auto":
        print(f"deepapps: auto: --data.streaming {str(stream).lower()} ({why})", file=sys.stderr)
    return StreamingTabularDataModule(cfg) if stream else TabularDataModule(cfg)


class StreamingTabularDataModule(TabularDataModule):
    """A TabularDataModule whose train split streams from Parquet (see the module docstring).

    Attributes beyond the parent's: `sizes` (rows per split), `train_counts` (normal, fraud) of the
    whole train split; `encoded["train"]`/`y["train"]` hold the baseline sample only.
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
        metadata = {f: pq.ParquetFile(f).metadata for f in files}
        self.units = [(f, g, metadata[f].row_group(g).num_rows)  # (file, row group, rows): the unit of shuffling
                      for f in files for g in range(metadata[f].num_row_groups)]
        self.n_rows = sum(n for _, _, n in self.units)
        if self.n_rows == 0:
            raise DataError(f"{source}: empty table (no rows)")
        self._split_from_keys(source)
        self.spec = self._fit_spec(source)
        self._encode_held_out(source)
        self.labels, self.multilabel = LABELS, False
        self.n_synthetic, self._gan_seed, self._synthetic = 0, None, None

    # --- passes over the file -------------------------------------------------------------------

    def _read(self, columns: list[str], units=None):
        """Record batches of `columns` (tidy names) with the global row index of their first row."""
        import pyarrow.parquet as pq

        names = [self._names[c] for c in columns]
        offsets = np.cumsum([0] + [n for _, _, n in self.units])
        for i in (range(len(self.units)) if units is None else units):
            path, group, _ = self.units[i]
            start = int(offsets[i])
            for batch in pq.ParquetFile(path).iter_batches(READ_ROWS, row_groups=[group], columns=names):
                frame = tidy_frame(pl.from_arrow(batch), self.missing, numbers=False)
                yield start, frame
                start += frame.height

    def _split_from_keys(self, source: str) -> None:
        c = self.columns
        keys = [k for k in (c.label, c.time) if k]
        frame = pl.concat([f for _, f in self._read(keys)]).with_row_index("__row")
        parts = split_frame(frame, Columns(label=c.label, time=c.time), self.cfg.split, self.cfg.val_fraction,
                            self.cfg.test_fraction, self.cfg.split_seed)
        y_train, positive = targets(parts["train"], c.label, source)
        if len(np.unique(y_train)) < 2:
            raise DataError(f"{source}: label column {c.label!r} has only one class in the train split")
        self.positive = positive
        self.index = {k: part["__row"].to_numpy().astype(np.int64) for k, part in parts.items()}  # split order
        self.split_of = np.full(self.n_rows, -1, np.int8)
        self.y_all = np.zeros(self.n_rows, np.int8)
        for code, (k, part) in enumerate(parts.items()):
            self.split_of[self.index[k]] = code
            self.y_all[self.index[k]] = targets(part, c.label, source, positive)[0]
        self.split_names = list(parts)
        self.sizes = {k: len(v) for k, v in self.index.items()}
        self.train_counts = np.bincount(self.y_all[self.index["train"]], minlength=2)

    def _fit_spec(self, source: str) -> FeatureSpec:
        """`FeatureSpec.fit` on the train rows: numerics one column at a time, vocabularies streamed."""
        c, cfg, train = self.columns, self.cfg, self.split_of == 0
        log_columns = [n for n in c.numeric if "amount" in n.lower()] if cfg.log_columns is None else cfg.log_columns
        spec = FeatureSpec(numeric=list(c.numeric), categorical=list(c.categorical),
                           log=[n in log_columns for n in c.numeric], center=[], scale=[], vocab={},
                           ids=list(c.ids), time=c.time, label=c.label, positive=self.positive)
        per_pass = max(1, COLUMN_BYTES // (8 * self.n_rows))  # numeric columns read together
        for i in range(0, len(c.numeric), per_pass):
            names = c.numeric[i:i + per_pass]
            columns = pl.concat([f for _, f in self._read(names)]).filter(pl.Series(train))
            some = FeatureSpec.fit(columns, Columns(None, None, numeric=names), self.positive, log_columns)
            _, errors = _numeric_errors(columns, some)
            if errors is not None:
                raise DataError(f"{source}: train rows have bad values (first: {errors})")
            spec.center.extend(some.center)
            spec.scale.extend(some.scale)
            del columns
        if c.categorical:
            counts: dict[str, dict[str, int]] = {name: {} for name in c.categorical}
            for start, frame in self._read(c.categorical):
                part = frame.filter(pl.Series(train[start:start + frame.height]))
                for name in c.categorical:
                    vc = part[name].cast(pl.String).drop_nulls().value_counts()
                    seen = counts[name]
                    for value, n in zip(vc[name].to_list(), vc["count"].to_list()):
                        seen[value] = seen.get(value, 0) + n
            for name, seen in counts.items():
                ranked = sorted(seen.items(), key=lambda kv: (-kv[1], kv[0]))
                spec.vocab[name] = [str(v) for v, n in ranked if n >= cfg.min_category_count]
        return spec

    def _encode_held_out(self, source: str) -> None:
        """Validation and test rows (and the train sample for the baselines) encoded, in split order."""
        rng = np.random.default_rng(self.cfg.split_seed)
        train_index = self.index["train"]
        sample = np.sort(rng.choice(train_index, min(BASELINE_ROWS, len(train_index)), replace=False))
        wanted = {"train": sample, "val": np.sort(self.index["val"]), "test": np.sort(self.index["test"])}
        held = np.full(self.n_rows, -1, np.int8)  # 0: train sample, 1: val, 2: test, -1: not held
        for code, rows in enumerate(wanted.values()):
            held[rows] = code
        pieces: dict[str, list] = {k: [] for k in wanted}
        for start, frame in self._read(self.columns.features):
            codes = held[start:start + frame.height]
            for code, k in enumerate(wanted):
                rows = np.flatnonzero(codes == code)
                if len(rows):
                    pieces[k].append(encode(frame[rows], self.spec))
        del held
        self.encoded, self.y = {}, {}
        for k, rows in wanted.items():
            enc = _concat(pieces[k], self.spec)
            if enc.bad.any():
                raise DataError(f"{source}: {int(enc.bad.sum())} {k} rows have bad values (first: {enc.first_error})")
            if k != "train":  # file order -> the order of the split (as the in-memory path holds it)
                order = np.searchsorted(rows, self.index[k])
                enc = Encoded(enc.numeric[order], enc.categorical[order], enc.errors.gather(order), enc.unknown)
                rows = self.index[k]
            self.encoded[k], self.y[k] = enc, self.y_all[rows].astype(np.int64)

    # --- what the fit flow asks for ---------------------------------------------------------------

    def train_dataloader(self) -> DataLoader:
        return DataLoader(TrainStream(self), batch_size=None, num_workers=self.cfg.num_workers)

    def synthetic(self) -> Encoded:
        raise ConfigError("--data.gan_oversample needs the train split in memory: use --data.streaming false")

    def class_weights(self, mode: str | None) -> list[float] | None:
        """As the in-memory path's, from the counts of the whole train split."""
        return class_weights(mode, self.train_counts.copy())

    def summary(self) -> dict:
        out = super().summary()
        out["sizes"] = dict(self.sizes)
        counts = {k: np.bincount(self.y_all[v], minlength=2) for k, v in self.index.items()}
        out["class_counts"] = {k: {LABELS[0]: int(n[0]), LABELS[1]: int(n[1])} for k, n in counts.items()}
        out["notes"].append(f"streaming: train rows streamed (shuffle buffer {self.cfg.shuffle_buffer} rows); "
                            f"baselines fitted on {len(self.y['train'])} sampled train rows")
        return out


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
        train = dm.split_of == 0
        buffer: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
        held = 0
        for start, frame in dm._read(dm.columns.features, units=units):
            rows = np.flatnonzero(train[start:start + frame.height])
            if not len(rows):
                continue
            enc = encode(frame[rows], dm.spec)
            buffer.append((enc.numeric, enc.categorical, dm.y_all[rows + start].astype(np.int64)))
            held += len(rows)
            if held >= dm.cfg.shuffle_buffer:
                buffer, held = yield from _emit(buffer, rng, batch, keep=dm.cfg.shuffle_buffer // 2, spec=dm.spec)
        yield from _emit(buffer, rng, batch, keep=0, spec=dm.spec)


def _emit(buffer, rng, batch: int, keep: int, spec: FeatureSpec):
    """Shuffle the buffer, yield full batches until at most `keep` (+ < batch) rows remain; return the rest."""
    if not buffer:
        return [], 0
    numeric, categorical, y = (np.concatenate(parts) for parts in zip(*buffer))
    order = rng.permutation(len(y))
    numeric, categorical, y = numeric[order], categorical[order], y[order]
    n_out = max(0, (len(y) - keep) // batch) * batch
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
