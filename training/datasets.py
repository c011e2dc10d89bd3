"""Offline datasets for training and evaluation: the UCI Online Retail log and S3-Rec sequences.

Both loaders turn a file into plain pandas / Python structures with string ids, and the split
helpers implement the offline protocol of DESIGN §4 (last unit = test, the one before =
validation, the rest = history; a unit is one item for sequence data, one basket for retail).

Online Retail cleaning (the README's "usual cleaning"), applied in this order; each dropped row
is counted once, under the first rule that drops it:

1. ``no_customer_id``: CustomerID missing.
2. ``cancelled``: InvoiceNo starts with "C".
3. ``quantity_non_positive``: Quantity <= 0 (or missing).
4. ``price_non_positive``: UnitPrice <= 0 (or missing).
5. ``non_product_code``: postage, fees, discounts, manual adjustments, samples, gift vouchers:
   StockCode in :data:`NON_PRODUCT_CODES`, or made of letters and spaces only, or starting with
   "GIFT_" (vouchers are money, not products; in the 2010-2011 file none has a CustomerID).
6. ``no_description``: Description missing or blank.

Exact duplicate rows are kept (the README's cleaning does not drop them; a basket dedupes its
items in :func:`retail_baskets`). StockCodes are upper-cased first: "85123a" and "85123A" name
the same product (same Description) in this file.
"""

from __future__ import annotations

import gzip
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

ONLINE_RETAIL_FILES = ("online_retail_2010_2011.parquet", "online_retail_2010_2011.csv.gz")
ONLINE_RETAIL_COLUMNS = (
    "InvoiceNo",
    "StockCode",
    "Description",
    "Quantity",
    "InvoiceDate",
    "UnitPrice",
    "CustomerID",
    "Country",
)
# Non-product StockCodes named by the dataset README, plus "S" (SAMPLES). Any code made only of
# letters and spaces is treated the same way (see _is_non_product).
NON_PRODUCT_CODES = frozenset(
    {"POST", "D", "M", "DOT", "BANK CHARGES", "AMAZONFEE", "C2", "CRUK", "PADS", "B", "S"}
)
SHOP_TIMEZONE = "Europe/London"

_ALPHA_CODE = r"[A-Z ]+"


@dataclass(frozen=True)
class RetailLog:
    """A cleaned purchase log and the catalog of the items it contains.

    ``items``: item_id, title, price (median unit price, GBP), n_purchases (purchase rows).
    ``purchases``: user_id, item_id, invoice, ts (UTC), quantity, price, country, sorted by
    (ts, invoice, file row order).
    ``cleaning``: rows_in, dropped_<rule> per rule, rows_out (of the load), and
    stock_code_upcased (kept rows whose StockCode was lower-case).
    """

    items: pd.DataFrame
    purchases: pd.DataFrame
    cleaning: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class SequenceData:
    """Per-user item sequences in time order, with optional item attribute ids."""

    sequences: dict[str, list[str]]
    item_attributes: dict[str, list[str]] = field(default_factory=dict)
    n_users: int = field(init=False)
    n_items: int = field(init=False)
    n_interactions: int = field(init=False)

    def __post_init__(self) -> None:
        items: set[str] = set()
        for seq in self.sequences.values():
            items.update(seq)
        object.__setattr__(self, "n_users", len(self.sequences))
        object.__setattr__(self, "n_items", len(items))
        object.__setattr__(self, "n_interactions", sum(len(s) for s in self.sequences.values()))


# --------------------------------------------------------------------------------------------
# Locating files


def _repo_root() -> Path:
    return Path(__file__).resolve().parent.parent


def _find_data_file(
    data_root: Path | None, subdir: str, names: tuple[str, ...], what: str
) -> Path:
    roots = [Path(data_root)] if data_root is not None else [_repo_root().parent / "shared" / "data"]
    candidates = [root / subdir / name for root in roots for name in names]
    candidates += [root / name for root in roots for name in names]
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    looked = "\n  ".join(str(c) for c in candidates)
    raise FileNotFoundError(
        f"{what} not found. Looked for:\n  {looked}\n"
        "Pass the file path explicitly, or a data_root that holds it."
    )


def default_online_retail_path(data_root: Path | None = None) -> Path:
    """The Online Retail file under ``data_root`` (default: ``<repo>/../shared/data``).

    Looks in ``<root>/online_retail/`` then ``<root>/``, preferring the parquet (faster to load)
    over the csv.gz.
    """
    return _find_data_file(data_root, "online_retail", ONLINE_RETAIL_FILES, "Online Retail data")


def default_s3rec_path(name: str = "Beauty", data_root: Path | None = None) -> Path:
    """The S3-Rec sequence file ``<name>.txt(.gz)`` under ``data_root`` (default as above)."""
    return _find_data_file(
        data_root, "amazon_s3rec", (f"{name}.txt.gz", f"{name}.txt"), f"S3-Rec {name} sequences"
    )


# --------------------------------------------------------------------------------------------
# Online Retail


def read_online_retail_raw(path: Path | str) -> pd.DataFrame:
    """The file as it is (no cleaning), chosen by suffix: ``.parquet``, ``.csv`` or ``.csv.gz``."""
    path = Path(path)
    name = path.name.lower()
    if name.endswith(".parquet"):
        raw = pd.read_parquet(path)
    elif name.endswith(".csv") or name.endswith(".csv.gz"):
        raw = pd.read_csv(
            path,
            dtype={
                "InvoiceNo": str,
                "StockCode": str,
                "Description": str,
                "InvoiceDate": str,
                "Country": str,
                "CustomerID": "float64",
            },
            keep_default_na=False,
            na_values={"CustomerID": [""], "Description": [""], "Quantity": [""], "UnitPrice": [""]},
        )
    else:
        raise ValueError(f"{path}: unknown format; expected .parquet, .csv or .csv.gz")
    return raw


def load_online_retail(path: Path | str | None = None) -> RetailLog:
    """Load and clean the Online Retail log (default file: :func:`default_online_retail_path`)."""
    if path is None:
        path = default_online_retail_path()
    return clean_online_retail(read_online_retail_raw(path))


def clean_online_retail(raw: pd.DataFrame) -> RetailLog:
    """Apply the cleaning rules of the module docstring to a raw frame with the UCI columns."""
    missing = [c for c in ONLINE_RETAIL_COLUMNS if c not in raw.columns]
    if missing:
        raise ValueError(f"Online Retail data lacks columns {missing}; has {list(raw.columns)}")

    invoice = raw["InvoiceNo"].astype("string").str.strip()
    code_raw = raw["StockCode"].astype("string").str.strip()
    code = code_raw.str.upper()
    customer = pd.to_numeric(raw["CustomerID"], errors="raise").astype("float64")
    quantity = pd.to_numeric(raw["Quantity"], errors="raise")
    unit_price = pd.to_numeric(raw["UnitPrice"], errors="raise").astype("float64")
    description = _clean_description(raw["Description"])

    rules: list[tuple[str, pd.Series]] = [
        ("no_customer_id", customer.isna()),
        ("cancelled", invoice.str.upper().str.startswith("C").fillna(False)),
        ("quantity_non_positive", ~(quantity > 0)),
        ("price_non_positive", ~(unit_price > 0)),
        ("non_product_code", _is_non_product(code)),
        ("no_description", description.isna()),
    ]
    keep = np.ones(len(raw), dtype=bool)
    cleaning: dict[str, int] = {"rows_in": len(raw)}
    for name, mask in rules:
        drop = np.asarray(mask, dtype=bool)
        cleaning[f"dropped_{name}"] = int((keep & drop).sum())
        keep &= ~drop
    cleaning["rows_out"] = int(keep.sum())
    cleaning["stock_code_upcased"] = int((keep & np.asarray(code_raw != code, dtype=bool)).sum())

    kept_customer = customer[keep].to_numpy()
    if not np.all(kept_customer == np.floor(kept_customer)):
        raise ValueError("CustomerID holds non-integer values; expected integer customer ids")

    def kept(values: pd.Series) -> pd.Series:
        return values[keep].reset_index(drop=True)

    purchases = pd.DataFrame(
        {
            "user_id": pd.Series(kept_customer.astype(np.int64)).astype(str),
            "item_id": kept(code).astype(str),
            "invoice": kept(invoice).astype(str),
            "ts": _to_utc(kept(raw["InvoiceDate"])),
            "quantity": kept(quantity).astype(np.int64),
            "price": kept(unit_price),
            "country": kept(raw["Country"]).astype(str).str.strip(),
        }
    )
    # File order (before the sort) is the tie-break for titles and for purchases.
    titles = pd.DataFrame({"item_id": purchases["item_id"], "title": kept(description).astype(str)})
    purchases["_row"] = np.arange(len(purchases))
    purchases = (
        purchases.sort_values(["ts", "invoice", "_row"], kind="stable")
        .drop(columns="_row")
        .reset_index(drop=True)
    )
    items = _catalog(purchases, titles)
    return RetailLog(items=items, purchases=purchases, cleaning=cleaning)


def _clean_description(description: pd.Series) -> pd.Series:
    """Mojibake "Â£" -> "£", whitespace runs -> one space, stripped; blank -> missing."""
    # Clean each distinct text once: ~4k descriptions over ~540k rows.
    codes, uniques = pd.factorize(description, sort=False)
    cleaned = [" ".join(str(text).replace("Â£", "£").split()) or None for text in uniques]
    values = np.array(cleaned + [None], dtype=object)[codes]  # code -1 (missing) -> None
    return pd.Series(values, index=description.index, dtype="string")


def _is_non_product(code: pd.Series) -> pd.Series:
    return (
        code.isin(NON_PRODUCT_CODES)
        | code.str.fullmatch(_ALPHA_CODE)
        | code.str.startswith("GIFT_")
    ).fillna(False)


def _to_utc(dates: pd.Series) -> pd.Series:
    """UK local wall-clock times to UTC.

    Ambiguous times (the repeated hour when BST ends) are read as BST, the first occurrence;
    non-existent ones (the skipped hour when BST starts) move forward to 02:00 BST. The
    2010-2011 file has no purchase between 01:00 and 02:00 on either day.
    """
    if isinstance(dates.dtype, pd.DatetimeTZDtype):
        return dates.dt.tz_convert("UTC")
    if pd.api.types.is_datetime64_dtype(dates.dtype):
        local = dates
        if local.isna().any():
            raise ValueError(f"InvoiceDate missing on {int(local.isna().sum())} kept rows")
    else:
        # Parse each distinct string once: invoices repeat their timestamp on every line.
        codes, uniques = pd.factorize(dates, sort=False)
        if (codes < 0).any():
            raise ValueError(f"InvoiceDate missing on {int((codes < 0).sum())} kept rows")
        parsed = pd.to_datetime(pd.Series(uniques).astype(str), format="ISO8601")
        local = pd.Series(parsed.to_numpy()[codes], index=dates.index)
    utc = local.dt.tz_localize(
        SHOP_TIMEZONE, ambiguous=np.ones(len(local), dtype=bool), nonexistent="shift_forward"
    )
    return utc.dt.tz_convert("UTC")


def _catalog(purchases: pd.DataFrame, titles: pd.DataFrame) -> pd.DataFrame:
    """Item table for the items in ``purchases``: the most frequent cleaned description (ties to
    the earliest row of ``titles``, which is in file order), the median unit price, the rows.
    """
    votes = (
        titles.assign(_row=np.arange(len(titles)))
        .groupby(["item_id", "title"], sort=False)
        .agg(n=("_row", "size"), first=("_row", "min"))
        .reset_index()
        .sort_values(["item_id", "n", "first"], ascending=[True, False, True], kind="stable")
    )
    title = votes.drop_duplicates("item_id").set_index("item_id")["title"]
    by_item = purchases.groupby("item_id", sort=True)
    items = pd.DataFrame(
        {
            "title": title,
            "price": by_item["price"].median().astype("float64"),
            "n_purchases": by_item.size().astype(np.int64),
        }
    )
    return _item_frame(items)


def _item_frame(items: pd.DataFrame) -> pd.DataFrame:
    items = items.rename_axis("item_id").reset_index().sort_values("item_id", kind="stable")
    items = items.astype({"item_id": str, "title": str, "price": "float64", "n_purchases": np.int64})
    return items[["item_id", "title", "price", "n_purchases"]].reset_index(drop=True)


def _subset(log: RetailLog, keep: np.ndarray | pd.Series) -> RetailLog:
    """The purchases where ``keep``; the catalog cut to their items, n_purchases recounted."""
    purchases = log.purchases[np.asarray(keep, dtype=bool)].reset_index(drop=True)
    counts = purchases.groupby("item_id", sort=True).size()
    items = log.items.set_index("item_id").loc[counts.index].assign(n_purchases=counts)
    return RetailLog(items=_item_frame(items), purchases=purchases, cleaning=dict(log.cleaning))


def sample_customers(log: RetailLog, n: int, *, min_invoices: int = 2, seed: int = 0) -> RetailLog:
    """The log restricted to ``n`` customers drawn (deterministically, by ``seed``) among those
    with at least ``min_invoices`` distinct invoices, and the catalog to the items they bought.

    Titles and prices stay those of the full catalog; n_purchases is recounted on the sample;
    ``cleaning`` is the load's. Raises ValueError when fewer than ``n`` customers qualify.
    """
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    per_user = log.purchases.groupby("user_id", sort=True)["invoice"].nunique()
    eligible = per_user.index[per_user >= min_invoices].to_numpy(dtype=object)
    if n > len(eligible):
        raise ValueError(
            f"asked for {n} customers but only {len(eligible)} have >= {min_invoices} invoices"
        )
    rng = np.random.default_rng(seed)
    chosen = set(rng.choice(eligible, size=n, replace=False).tolist()) if n else set()
    return _subset(log, log.purchases["user_id"].isin(chosen))


def time_slice(log: RetailLog, start: Any = None, end: Any = None) -> RetailLog:
    """Purchases with ``start <= ts < end`` (None: unbounded), and the items they contain.

    Bounds are anything :class:`pandas.Timestamp` accepts; naive ones are read as UTC.
    """
    ts = log.purchases["ts"]
    keep = np.ones(len(ts), dtype=bool)
    if start is not None:
        keep &= np.asarray(ts >= _utc_bound(start))
    if end is not None:
        keep &= np.asarray(ts < _utc_bound(end))
    return _subset(log, keep)


def _utc_bound(value: Any) -> pd.Timestamp:
    stamp = pd.Timestamp(value)
    return stamp.tz_localize("UTC") if stamp.tzinfo is None else stamp.tz_convert("UTC")


def retail_baskets(log: RetailLog) -> dict[str, list[list[str]]]:
    """Each user's baskets (one per invoice) in time order, users sorted by id.

    An invoice's position is that of its first line; within a basket each item appears once, at
    its first line.
    """
    return {user: [items for _, items in baskets] for user, baskets in timed_retail_baskets(log).items()}


def timed_retail_baskets(log: RetailLog) -> dict[str, list[tuple[float, list[str]]]]:
    """:func:`retail_baskets` with each basket's time (its first line's, epoch seconds)."""
    lines = log.purchases[["user_id", "invoice", "item_id", "ts"]].drop_duplicates(["user_id", "invoice", "item_id"])
    seconds = lines["ts"].to_numpy(dtype="datetime64[ns]").astype(np.int64) / 1e9
    baskets: dict[str, dict[str, tuple[float, list[str]]]] = {}
    columns = (lines[c].to_numpy(dtype=object).tolist() for c in ("user_id", "invoice", "item_id"))
    for (user, invoice, item), ts in zip(zip(*columns), seconds.tolist()):
        baskets.setdefault(user, {}).setdefault(invoice, (ts, []))[1].append(item)
    return {user: list(baskets[user].values()) for user in sorted(baskets)}


# --------------------------------------------------------------------------------------------
# S3-Rec sequences


def _open_text(path: Path):
    if path.name.endswith(".gz"):
        return gzip.open(path, "rt", encoding="utf-8")
    return path.open("r", encoding="utf-8")


def load_sequences(path: Path | str) -> SequenceData:
    """Read an S3-Rec ``<Name>.txt`` / ``<Name>.txt.gz`` file (``user item item …`` per line)
    and, if present beside it, ``<Name>_item2attributes.json(.gz)``.
    """
    path = Path(path)
    name = path.name
    if name.endswith(".gz"):
        name = name[: -len(".gz")]
    if not name.endswith(".txt"):
        raise ValueError(f"{path}: expected an S3-Rec <Name>.txt or <Name>.txt.gz file")
    stem = name[: -len(".txt")]

    sequences: dict[str, list[str]] = {}
    with _open_text(path) as lines:
        for number, line in enumerate(lines, start=1):
            fields = line.split()
            if not fields:
                continue
            user, items = fields[0], fields[1:]
            if not items:
                raise ValueError(f"{path}:{number}: user {user} has no items")
            if user in sequences:
                raise ValueError(f"{path}:{number}: user {user} appears twice")
            sequences[user] = items

    item_attributes: dict[str, list[str]] = {}
    for attr_name in (f"{stem}_item2attributes.json", f"{stem}_item2attributes.json.gz"):
        attr_path = path.with_name(attr_name)
        if attr_path.is_file():
            with _open_text(attr_path) as handle:
                raw = json.load(handle)
            item_attributes = {str(k): [str(a) for a in v] for k, v in raw.items()}
            break
    return SequenceData(sequences=sequences, item_attributes=item_attributes)


# --------------------------------------------------------------------------------------------
# Offline split (DESIGN §4)


def split_last_unit(units: list[list[str]]) -> tuple[list[str], list[str], list[str]]:
    """(history, validation, test): the last unit is test, the one before validation, the
    earlier units flattened in order are history. A unit is one item (``[[i] for i in seq]``)
    or one basket. To score the test unit, the model sees ``history + validation``.

    Raises ValueError with fewer than two units.
    """
    if len(units) < 2:
        raise ValueError(
            f"need at least 2 units (validation and test), got {len(units)}; "
            "filter users first (e.g. min_invoices=2 or sequences of length >= 2)"
        )
    history = [item for unit in units[:-2] for item in unit]
    return history, list(units[-2]), list(units[-1])
