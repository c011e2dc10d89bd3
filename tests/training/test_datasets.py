"""Tests for training/datasets.py: Online Retail cleaning, S3-Rec sequences, offline splits."""

from __future__ import annotations

from datetime import datetime, timezone

import gzip
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from training.datasets import (
    ONLINE_RETAIL_FILES,
    RetailLog,
    SequenceData,
    clean_online_retail,
    default_online_retail_path,
    default_s3rec_path,
    load_online_retail,
    load_sequences,
    retail_baskets,
    timed_retail_baskets,
    sample_customers,
    split_last_unit,
    time_slice,
)

GOOD = {
    "InvoiceNo": "536365",
    "StockCode": "85123A",
    "Description": "WHITE HANGING HEART T-LIGHT HOLDER",
    "Quantity": 6,
    "InvoiceDate": "2010-12-01 08:26:00",
    "UnitPrice": 2.55,
    "CustomerID": 17850.0,
    "Country": "United Kingdom",
}


def raw_frame(*rows: dict) -> pd.DataFrame:
    """A raw UCI-shaped frame; each row overrides fields of a valid purchase line."""
    return pd.DataFrame([{**GOOD, **row} for row in rows])


def utc(text: str) -> pd.Timestamp:
    return pd.Timestamp(text, tz="UTC")


# --------------------------------------------------------------------------------------------
# Cleaning rules


@pytest.mark.parametrize(
    ("rule", "bad"),
    [
        ("no_customer_id", {"CustomerID": np.nan}),
        ("cancelled", {"InvoiceNo": "C536379", "Quantity": -1}),
        ("cancelled", {"InvoiceNo": "C536380"}),  # "C" alone decides, even with Quantity > 0
        ("quantity_non_positive", {"Quantity": 0}),
        ("quantity_non_positive", {"Quantity": -3}),
        ("price_non_positive", {"UnitPrice": 0.0}),
        ("price_non_positive", {"UnitPrice": -11062.06}),
        ("non_product_code", {"StockCode": "POST", "Description": "POSTAGE"}),
        ("no_description", {"Description": None}),
        ("no_description", {"Description": "   "}),
    ],
)
def test_each_rule_drops_its_rows_and_counts_them(rule: str, bad: dict) -> None:
    log = clean_online_retail(raw_frame({}, bad, {"InvoiceNo": "536366"}))

    assert log.cleaning["rows_in"] == 3
    assert log.cleaning[f"dropped_{rule}"] == 1
    assert sum(v for k, v in log.cleaning.items() if k.startswith("dropped_")) == 1
    assert log.cleaning["rows_out"] == 2
    assert log.purchases["invoice"].tolist() == ["536365", "536366"]


def test_a_row_breaking_several_rules_counts_under_the_first_only() -> None:
    log = clean_online_retail(
        raw_frame({"CustomerID": np.nan, "InvoiceNo": "C1", "Quantity": -1, "StockCode": "POST"})
    )
    dropped = {k: v for k, v in log.cleaning.items() if k.startswith("dropped_")}

    assert dropped == {
        "dropped_no_customer_id": 1,
        "dropped_cancelled": 0,
        "dropped_quantity_non_positive": 0,
        "dropped_price_non_positive": 0,
        "dropped_non_product_code": 0,
        "dropped_no_description": 0,
    }
    assert log.purchases.empty and log.items.empty


@pytest.mark.parametrize(
    "code",
    ["POST", "D", "M", "m", "DOT", "BANK CHARGES", "AMAZONFEE", "C2", "CRUK", "PADS", "B", "S",
     "DCGSSGIRL", "NEWFEE", "gift_0001_20", "GIFT_0002_10"],
)
def test_non_product_stock_codes_are_dropped(code: str) -> None:
    log = clean_online_retail(raw_frame({"StockCode": code}))
    assert log.cleaning["dropped_non_product_code"] == 1
    assert log.purchases.empty


@pytest.mark.parametrize("code", ["85123A", "22423", "15056BL", "DCGS0003", "90214Z"])
def test_product_stock_codes_are_kept(code: str) -> None:
    log = clean_online_retail(raw_frame({"StockCode": code}))
    assert log.purchases["item_id"].tolist() == [code]


def test_lower_case_stock_codes_join_their_upper_case_twin() -> None:
    log = clean_online_retail(raw_frame({}, {"StockCode": "85123a", "InvoiceNo": "536366"}))

    assert log.purchases["item_id"].tolist() == ["85123A", "85123A"]
    assert log.items["item_id"].tolist() == ["85123A"]
    assert log.cleaning["stock_code_upcased"] == 1


# --------------------------------------------------------------------------------------------
# Values and types


def test_purchase_columns_and_types() -> None:
    log = clean_online_retail(raw_frame({"Country": " EIRE "}))
    row = log.purchases.iloc[0]

    assert list(log.purchases.columns) == [
        "user_id", "item_id", "invoice", "ts", "quantity", "price", "country"
    ]
    assert row["user_id"] == "17850"  # the float CustomerID as an integer string
    assert row["invoice"] == "536365"
    assert row["ts"] == utc("2010-12-01 08:26")  # GMT in winter: same wall clock
    assert str(log.purchases["ts"].dt.tz) == "UTC"
    assert row["quantity"] == 6 and log.purchases["quantity"].dtype == np.int64
    assert row["price"] == pytest.approx(2.55)
    assert row["country"] == "EIRE"


def test_customer_id_given_as_text_or_integer() -> None:
    log = clean_online_retail(raw_frame({"CustomerID": "12346"}, {"CustomerID": 12347}))
    assert sorted(log.purchases["user_id"]) == ["12346", "12347"]


def test_non_integer_customer_id_is_an_error() -> None:
    with pytest.raises(ValueError, match="CustomerID"):
        clean_online_retail(raw_frame({"CustomerID": 17850.5}))


def test_missing_invoice_date_is_an_error_only_on_kept_rows() -> None:
    log = clean_online_retail(raw_frame({}, {"CustomerID": np.nan, "InvoiceDate": None}))
    assert len(log.purchases) == 1
    with pytest.raises(ValueError, match="InvoiceDate"):
        clean_online_retail(raw_frame({}, {"InvoiceDate": None}))


def test_missing_columns_are_named() -> None:
    with pytest.raises(ValueError, match="Country"):
        clean_online_retail(raw_frame({}).drop(columns="Country"))


def test_mojibake_pound_sign_is_fixed_and_whitespace_cleaned() -> None:
    log = clean_online_retail(
        raw_frame({"StockCode": "12345", "Description": "  Mug  with Â£5.00   sticker "})
    )
    assert log.items["title"].tolist() == ["Mug with £5.00 sticker"]


def test_item_title_is_the_most_frequent_description_and_price_the_median() -> None:
    log = clean_online_retail(
        raw_frame(
            {"Description": "HEART HOLDER", "UnitPrice": 1.0},
            {"Description": "WHITE HEART HOLDER ", "UnitPrice": 2.0},
            {"Description": "WHITE HEART HOLDER", "UnitPrice": 10.0},
            {"StockCode": "22423", "Description": "CAKESTAND", "UnitPrice": 12.75},
            {"StockCode": "22423", "Description": "REGENCY CAKESTAND", "UnitPrice": 10.95},
        )
    )
    items = log.items.set_index("item_id")

    assert list(log.items.columns) == ["item_id", "title", "price", "n_purchases"]
    assert log.items["item_id"].tolist() == ["22423", "85123A"]
    assert items.loc["85123A", "title"] == "WHITE HEART HOLDER"  # after stripping: 2 votes to 1
    assert items.loc["22423", "title"] == "CAKESTAND"  # tie: the earliest row wins
    assert items.loc["85123A", "price"] == pytest.approx(2.0)
    assert items.loc["22423", "price"] == pytest.approx(11.85)
    assert items.loc["85123A", "n_purchases"] == 3


# --------------------------------------------------------------------------------------------
# Time zone and ordering


@pytest.mark.parametrize(
    ("local", "expected_utc"),
    [
        ("2011-03-26 12:00:00", "2011-03-26 12:00"),  # GMT
        ("2011-03-27 00:30:00", "2011-03-27 00:30"),  # GMT, just before the change
        ("2011-03-27 01:30:00", "2011-03-27 01:00"),  # skipped hour: moved to 02:00 BST
        ("2011-03-27 12:00:00", "2011-03-27 11:00"),  # BST
        ("2011-10-29 12:00:00", "2011-10-29 11:00"),  # BST
        ("2011-10-30 01:30:00", "2011-10-30 00:30"),  # repeated hour: read as BST
        ("2011-10-30 12:00:00", "2011-10-30 12:00"),  # GMT again
    ],
)
def test_uk_local_time_becomes_utc_across_dst_changes(local: str, expected_utc: str) -> None:
    log = clean_online_retail(raw_frame({"InvoiceDate": local}))
    assert log.purchases["ts"].iloc[0] == utc(expected_utc)


def test_purchases_sorted_by_time_then_invoice_then_file_order() -> None:
    log = clean_online_retail(
        raw_frame(
            {"InvoiceNo": "536370", "InvoiceDate": "2010-12-01 09:00:00", "StockCode": "22728"},
            {"InvoiceNo": "536369", "InvoiceDate": "2010-12-01 09:00:00", "StockCode": "22727"},
            {"InvoiceNo": "536370", "InvoiceDate": "2010-12-01 09:00:00", "StockCode": "22726"},
            {"InvoiceNo": "536368", "InvoiceDate": "2010-12-01 08:59:00", "StockCode": "22960"},
            {"InvoiceNo": "536370", "InvoiceDate": "2010-12-01 09:00:00", "StockCode": "22729"},
        )
    )
    assert log.purchases[["invoice", "item_id"]].values.tolist() == [
        ["536368", "22960"],
        ["536369", "22727"],
        ["536370", "22728"],
        ["536370", "22726"],
        ["536370", "22729"],
    ]


# --------------------------------------------------------------------------------------------
# Files and paths


def test_csv_gz_and_parquet_files_load_alike(tmp_path: Path) -> None:
    raw = raw_frame(
        {},
        {"CustomerID": np.nan},
        {"StockCode": "84029G", "Description": "KNITTED UNION FLAG HOT WATER BOTTLE"},
        {"InvoiceNo": "C536379", "Quantity": -1},
    )
    csv_path = tmp_path / "online_retail_2010_2011.csv.gz"
    parquet_path = tmp_path / "online_retail_2010_2011.parquet"
    written = raw.assign(CustomerID=raw["CustomerID"].astype("Int64"))  # as the shipped CSV
    written.to_csv(csv_path, index=False, compression="gzip")
    raw.to_parquet(parquet_path)

    from_csv = load_online_retail(csv_path)
    from_parquet = load_online_retail(parquet_path)

    pd.testing.assert_frame_equal(from_csv.purchases, from_parquet.purchases)
    pd.testing.assert_frame_equal(from_csv.items, from_parquet.items)
    assert from_csv.cleaning == from_parquet.cleaning
    assert from_csv.cleaning["rows_out"] == 2


def test_unknown_file_suffix_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "retail.xlsx"
    path.write_bytes(b"")
    with pytest.raises(ValueError, match="parquet"):
        load_online_retail(path)


def test_default_path_prefers_parquet_in_the_given_root(tmp_path: Path) -> None:
    folder = tmp_path / "online_retail"
    folder.mkdir()
    for name in ONLINE_RETAIL_FILES:
        (folder / name).write_bytes(b"")

    assert default_online_retail_path(tmp_path) == folder / "online_retail_2010_2011.parquet"
    (folder / "online_retail_2010_2011.parquet").unlink()
    assert default_online_retail_path(tmp_path) == folder / "online_retail_2010_2011.csv.gz"


def test_default_path_missing_names_what_it_looked_for(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError) as error:
        default_online_retail_path(tmp_path)
    message = str(error.value)
    assert "online_retail_2010_2011.parquet" in message
    assert "online_retail_2010_2011.csv.gz" in message
    assert str(tmp_path) in message


# --------------------------------------------------------------------------------------------
# Subsets


def synthetic_log(n_users: int = 30, seed: int = 1) -> RetailLog:
    """Users 10000.. with 1-4 invoices of 1-3 items from 20 products, over 2011."""
    rng = np.random.default_rng(seed)
    rows, invoice = [], 600000
    for user in range(10000, 10000 + n_users):
        for _ in range(int(rng.integers(1, 5))):
            invoice += 1
            day = pd.Timestamp("2011-01-01") + pd.Timedelta(days=int(rng.integers(0, 365)))
            for item in rng.choice(20, size=int(rng.integers(1, 4)), replace=False):
                rows.append(
                    {
                        "InvoiceNo": str(invoice),
                        "StockCode": f"{21000 + int(item)}",
                        "Description": f"PRODUCT {item}",
                        "InvoiceDate": f"{day:%Y-%m-%d} 12:00:00",
                        "CustomerID": float(user),
                        "UnitPrice": 1.0 + int(item),
                    }
                )
    return clean_online_retail(raw_frame(*rows))


def test_sample_customers_is_deterministic_and_keeps_only_their_items() -> None:
    log = synthetic_log()
    first = sample_customers(log, 5, seed=3)
    again = sample_customers(log, 5, seed=3)
    other = sample_customers(log, 5, seed=4)

    pd.testing.assert_frame_equal(first.purchases, again.purchases)
    pd.testing.assert_frame_equal(first.items, again.items)
    assert set(first.purchases["user_id"]) != set(other.purchases["user_id"])
    assert first.purchases["user_id"].nunique() == 5
    assert first.purchases.groupby("user_id")["invoice"].nunique().min() >= 2
    assert set(first.items["item_id"]) == set(first.purchases["item_id"])
    counts = first.purchases["item_id"].value_counts().to_dict()
    assert first.items.set_index("item_id")["n_purchases"].to_dict() == counts
    # Rows keep the log's order.
    assert first.purchases["ts"].is_monotonic_increasing


def test_sample_customers_min_invoices_and_size_checks() -> None:
    log = synthetic_log()
    per_user = log.purchases.groupby("user_id")["invoice"].nunique()
    everyone = sample_customers(log, len(per_user), min_invoices=1)

    assert everyone.purchases["user_id"].nunique() == len(per_user)
    with pytest.raises(ValueError, match="only"):
        sample_customers(log, int((per_user >= 3).sum()) + 1, min_invoices=3)


def test_time_slice_is_half_open_and_reads_naive_bounds_as_utc() -> None:
    log = clean_online_retail(
        raw_frame(
            {"InvoiceNo": "1", "InvoiceDate": "2011-06-01 10:00:00", "StockCode": "21001"},
            {"InvoiceNo": "2", "InvoiceDate": "2011-06-02 10:00:00", "StockCode": "21002"},
            {"InvoiceNo": "3", "InvoiceDate": "2011-06-03 10:00:00", "StockCode": "21003"},
        )
    )
    # Local 10:00 BST is 09:00 UTC.
    middle = time_slice(log, "2011-06-02 09:00", "2011-06-03 09:00")
    assert middle.purchases["invoice"].tolist() == ["2"]
    assert middle.items["item_id"].tolist() == ["21002"]
    assert time_slice(log, None, pd.Timestamp("2011-06-02 10:00", tz="Europe/London")).purchases[
        "invoice"
    ].tolist() == ["1"]
    assert time_slice(log, "2011-06-02 09:00:01").purchases["invoice"].tolist() == ["3"]


# --------------------------------------------------------------------------------------------
# Baskets and splits


def test_retail_baskets_group_invoices_in_time_order_and_dedupe_items() -> None:
    log = clean_online_retail(
        raw_frame(
            {"InvoiceNo": "2", "InvoiceDate": "2011-02-01 10:00:00", "StockCode": "22002"},
            {"InvoiceNo": "1", "InvoiceDate": "2011-01-01 10:00:00", "StockCode": "22001"},
            {"InvoiceNo": "2", "InvoiceDate": "2011-02-01 10:00:00", "StockCode": "22003"},
            {"InvoiceNo": "2", "InvoiceDate": "2011-02-01 10:00:00", "StockCode": "22002"},
            {"InvoiceNo": "2", "InvoiceDate": "2011-02-01 10:01:00", "StockCode": "22004"},
            {"InvoiceNo": "3", "InvoiceDate": "2011-01-15 10:00:00", "StockCode": "22001",
             "CustomerID": 12346.0},
            {"InvoiceNo": "4", "InvoiceDate": "2011-03-01 10:00:00", "StockCode": "22001"},
        )
    )
    baskets = retail_baskets(log)

    assert list(baskets) == ["12346", "17850"]
    assert baskets["12346"] == [["22001"]]
    # Invoice 2 spans two minutes and is still one basket.
    assert baskets["17850"] == [["22001"], ["22002", "22003", "22004"], ["22001"]]
    # Each basket's time is its first line's.
    timed = timed_retail_baskets(log)
    assert [items for _, items in timed["17850"]] == baskets["17850"]
    assert [datetime.fromtimestamp(t, timezone.utc).isoformat() for t, _ in timed["17850"]] == [
        "2011-01-01T10:00:00+00:00", "2011-02-01T10:00:00+00:00", "2011-03-01T10:00:00+00:00"]


def test_split_last_unit_by_item_and_by_basket() -> None:
    assert split_last_unit([["a"], ["b"], ["c"], ["d"]]) == (["a", "b"], ["c"], ["d"])
    assert split_last_unit([["a", "b"], ["c"], ["d", "e"], ["f", "a"]]) == (
        ["a", "b", "c"],
        ["d", "e"],
        ["f", "a"],
    )
    assert split_last_unit([["a"], ["b", "c"]]) == ([], ["a"], ["b", "c"])


def test_split_last_unit_returns_copies_and_needs_two_units() -> None:
    units = [["a"], ["b"], ["c"]]
    _, validation, test = split_last_unit(units)
    validation.append("x")
    test.append("y")
    assert units == [["a"], ["b"], ["c"]]
    with pytest.raises(ValueError, match="at least 2"):
        split_last_unit([["a", "b"]])


# --------------------------------------------------------------------------------------------
# S3-Rec sequences


def test_load_sequences_plain_text_without_attributes(tmp_path: Path) -> None:
    path = tmp_path / "Toy.txt"
    path.write_text("1 5 3 5\n2 4 1\n\n3 2 2 7 9\n")

    data = load_sequences(path)

    assert data.sequences == {"1": ["5", "3", "5"], "2": ["4", "1"], "3": ["2", "2", "7", "9"]}
    assert data.item_attributes == {}
    assert (data.n_users, data.n_items, data.n_interactions) == (3, 7, 9)


def test_load_sequences_gzip_with_gzip_attributes(tmp_path: Path) -> None:
    with gzip.open(tmp_path / "Toy.txt.gz", "wt") as handle:
        handle.write("1 1 2\n2 2 3\n")
    with gzip.open(tmp_path / "Toy_item2attributes.json.gz", "wt") as handle:
        json.dump({"1": [1, 2], "2": [3], "3": []}, handle)

    data = load_sequences(tmp_path / "Toy.txt.gz")

    assert data.sequences == {"1": ["1", "2"], "2": ["2", "3"]}
    assert data.item_attributes == {"1": ["1", "2"], "2": ["3"], "3": []}


def test_load_sequences_plain_attributes_beside_plain_text(tmp_path: Path) -> None:
    (tmp_path / "Toy.txt").write_text("7 1 2\n")
    (tmp_path / "Toy_item2attributes.json").write_text('{"1": [4], "2": [4, 5]}')
    assert load_sequences(tmp_path / "Toy.txt").item_attributes == {"1": ["4"], "2": ["4", "5"]}


@pytest.mark.parametrize(
    ("text", "message"),
    [("1 1 2\n1 3 4\n", "appears twice"), ("1 1 2\n2\n", "no items")],
)
def test_load_sequences_rejects_malformed_lines(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "Bad.txt"
    path.write_text(text)
    with pytest.raises(ValueError, match=message):
        load_sequences(path)


def test_sequence_data_counts_are_derived() -> None:
    data = SequenceData(sequences={"u": ["a", "b", "a"], "v": ["c"]})
    assert (data.n_users, data.n_items, data.n_interactions) == (2, 3, 4)


# --------------------------------------------------------------------------------------------
# The real files (skipped where the shared data is absent)


def _shared_file(locate) -> Path:
    try:
        return locate()
    except FileNotFoundError as error:
        pytest.skip(str(error))


@pytest.fixture(scope="module")
def online_retail() -> RetailLog:
    return load_online_retail(_shared_file(default_online_retail_path))


def test_real_online_retail_cleaned_counts(online_retail: RetailLog) -> None:
    log = online_retail
    purchases = log.purchases

    # The file is pinned by sha256 in its README, so the counts are exact.
    assert log.cleaning == {
        "rows_in": 541_909,
        "dropped_no_customer_id": 135_080,
        "dropped_cancelled": 8_905,
        "dropped_quantity_non_positive": 0,
        "dropped_price_non_positive": 40,
        "dropped_non_product_code": 1_547,
        "dropped_no_description": 0,
        "rows_out": 396_337,
        "stock_code_upcased": 0,
    }
    assert len(purchases) == 396_337
    assert purchases["user_id"].nunique() == 4_334
    assert purchases["item_id"].nunique() == len(log.items) == 3_659
    assert purchases["invoice"].nunique() == 18_402
    assert purchases["ts"].min() == utc("2010-12-01 08:26")
    assert purchases["ts"].max() == utc("2011-12-09 12:50")
    assert purchases["ts"].is_monotonic_increasing
    assert (purchases["quantity"] > 0).all() and (purchases["price"] > 0).all()
    assert not log.items["title"].str.contains("Â").any()
    assert purchases["user_id"].str.fullmatch(r"\d{5}").all()

    baskets = retail_baskets(log)
    assert sum(len(b) for b in baskets.values()) == 18_402
    assert sum(len(b) >= 2 for b in baskets.values()) == 2_829


def test_real_online_retail_csv_matches_parquet(online_retail: RetailLog) -> None:
    parquet = _shared_file(default_online_retail_path)
    csv_path = parquet.with_name("online_retail_2010_2011.csv.gz")
    if parquet.suffix != ".parquet" or not csv_path.is_file():
        pytest.skip("needs both the parquet and the csv.gz")
    from_csv = load_online_retail(csv_path)
    pd.testing.assert_frame_equal(from_csv.purchases, online_retail.purchases)
    pd.testing.assert_frame_equal(from_csv.items, online_retail.items)


def test_real_beauty_counts_match_the_readme() -> None:
    data = load_sequences(_shared_file(default_s3rec_path))

    assert (data.n_users, data.n_items, data.n_interactions) == (22_363, 12_101, 198_502)
    assert min(len(s) for s in data.sequences.values()) == 5
    assert len(data.item_attributes) == 12_101
    assert len({a for attrs in data.item_attributes.values() for a in attrs}) == 637
