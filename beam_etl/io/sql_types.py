"""Database column types -> Arrow types, and Arrow types -> DDL, for PostgreSQL and MySQL.

Two small tables per dialect, in the manner of sqlglot's type maps: the reader uses them to
build each batch's schema from the cursor description (so a NULL-only batch still has the
right types), the sink to ``CREATE TABLE`` from a batch's schema.
"""

from __future__ import annotations

import datetime as dt
import decimal
import json
import uuid
from typing import Any, Sequence

import pyarrow as pa

__all__ = ["postgres_arrow_type", "mysql_arrow_type", "arrow_to_ddl", "column_values"]

# PostgreSQL type OIDs (pg_type.oid) -> Arrow. Arrays map to list<element>.
_PG_SCALARS: dict[int, pa.DataType] = {
    16: pa.bool_(),
    17: pa.binary(),
    18: pa.string(),
    19: pa.string(),
    20: pa.int64(),
    21: pa.int16(),
    23: pa.int32(),
    25: pa.string(),
    26: pa.int64(),
    114: pa.string(),  # json: kept as JSON text
    142: pa.string(),  # xml
    700: pa.float32(),
    701: pa.float64(),
    1042: pa.string(),
    1043: pa.string(),
    1082: pa.date32(),
    1083: pa.time64("us"),
    1114: pa.timestamp("us"),
    1184: pa.timestamp("us", tz="UTC"),
    1186: pa.duration("us"),
    2950: pa.string(),  # uuid: canonical text
    3802: pa.string(),  # jsonb: JSON text
}
_PG_ARRAYS: dict[int, int] = {
    1000: 16, 1001: 17, 1005: 21, 1007: 23, 1016: 20, 1009: 25, 1015: 1043, 1021: 700,
    1022: 701, 1182: 1082, 1115: 1114, 1185: 1184, 2951: 2950, 3807: 3802, 199: 114, 1231: 1700,
}


def _pg_numeric(type_modifier: int | None) -> pa.DataType:
    # numeric(p, s) carries typmod = ((p << 16) | s) + 4; unconstrained numeric has none.
    if type_modifier is None or type_modifier < 4:
        return pa.decimal128(38, 10)
    value = type_modifier - 4
    precision, scale = (value >> 16) & 0xFFFF, value & 0xFFFF
    return pa.decimal128(precision, scale) if precision <= 38 else pa.decimal256(precision, scale)


def postgres_arrow_type(oid: int, type_modifier: int | None = None) -> pa.DataType:
    """The Arrow type for a PostgreSQL column; unknown types (enums, domains) become strings."""
    if oid == 1700:
        return _pg_numeric(type_modifier)
    if oid in _PG_ARRAYS:
        element = _PG_ARRAYS[oid]
        return pa.list_(_pg_numeric(None) if element == 1700 else _PG_SCALARS.get(element, pa.string()))
    return _PG_SCALARS.get(oid, pa.string())


# PyMySQL FIELD_TYPE codes -> Arrow.
_MYSQL: dict[int, pa.DataType] = {
    1: pa.int8(), 2: pa.int16(), 3: pa.int32(), 8: pa.int64(), 9: pa.int32(), 13: pa.int16(),
    4: pa.float32(), 5: pa.float64(),
    10: pa.date32(), 14: pa.date32(), 11: pa.duration("us"),
    7: pa.timestamp("us", tz="UTC"), 12: pa.timestamp("us"),
    15: pa.string(), 253: pa.string(), 254: pa.string(), 247: pa.string(), 248: pa.string(),
    245: pa.string(),  # JSON
    249: pa.binary(), 250: pa.binary(), 251: pa.binary(), 252: pa.binary(),
    16: pa.int64(),  # BIT
}


def mysql_arrow_type(type_code: int, precision: int | None = None, scale: int | None = None, binary: bool = False, unsigned: bool = False) -> pa.DataType:
    if type_code in (0, 246):  # DECIMAL / NEWDECIMAL
        p = max(1, min(int(precision or 38), 76))
        s = int(scale or 0)
        return pa.decimal128(p, s) if p <= 38 else pa.decimal256(p, s)
    if type_code == 8 and unsigned:
        return pa.uint64()
    if type_code in (249, 250, 251, 252, 253, 254, 15) and not binary:
        return pa.string()
    return _MYSQL.get(type_code, pa.string())


def column_values(values: Sequence[Any], data_type: pa.DataType) -> pa.Array:
    """An Arrow array from driver values, normalising JSON/UUID/enum values to text."""
    if pa.types.is_string(data_type):
        values = [
            None if v is None else v if isinstance(v, str)
            else json.dumps(v) if isinstance(v, (dict, list)) else str(v)
            for v in values
        ]
    elif pa.types.is_list(data_type) and pa.types.is_string(data_type.value_type):
        values = [None if v is None else [None if x is None else x if isinstance(x, str) else json.dumps(x) if isinstance(x, (dict, list)) else str(x) for x in v] for v in values]
    elif pa.types.is_timestamp(data_type) and data_type.tz is not None:
        values = [None if v is None else v if v.tzinfo else v.replace(tzinfo=dt.timezone.utc) for v in values]
    return pa.array(values, type=data_type)


# Arrow -> DDL, for create_table.
_DDL = {
    "postgres": {
        "bool": "BOOLEAN", "int8": "SMALLINT", "int16": "SMALLINT", "int32": "INTEGER", "int64": "BIGINT",
        "uint8": "SMALLINT", "uint16": "INTEGER", "uint32": "BIGINT", "uint64": "NUMERIC(20)",
        "float": "REAL", "double": "DOUBLE PRECISION", "string": "TEXT", "large_string": "TEXT",
        "binary": "BYTEA", "date32[day]": "DATE", "date64[ms]": "DATE",
    },
    "mysql": {
        "bool": "BOOLEAN", "int8": "TINYINT", "int16": "SMALLINT", "int32": "INT", "int64": "BIGINT",
        "uint8": "TINYINT UNSIGNED", "uint16": "SMALLINT UNSIGNED", "uint32": "INT UNSIGNED", "uint64": "BIGINT UNSIGNED",
        "float": "FLOAT", "double": "DOUBLE", "string": "TEXT", "large_string": "LONGTEXT",
        "binary": "BLOB", "date32[day]": "DATE", "date64[ms]": "DATE",
    },
}


def arrow_to_ddl(data_type: pa.DataType, dialect: str, key: bool = False) -> str:
    """A column type for CREATE TABLE; key columns get an indexable type on MySQL."""
    if pa.types.is_decimal(data_type):
        return f"NUMERIC({data_type.precision}, {data_type.scale})" if dialect == "postgres" else f"DECIMAL({min(data_type.precision, 65)}, {min(data_type.scale, 30)})"
    if pa.types.is_timestamp(data_type):
        if dialect == "postgres":
            return "TIMESTAMPTZ" if data_type.tz else "TIMESTAMP"
        return "DATETIME(6)"
    if pa.types.is_list(data_type):
        return f"{arrow_to_ddl(data_type.value_type, dialect)}[]" if dialect == "postgres" else "JSON"
    if pa.types.is_struct(data_type) or pa.types.is_map(data_type):
        return "JSONB" if dialect == "postgres" else "JSON"
    if key and dialect == "mysql" and (pa.types.is_string(data_type) or pa.types.is_large_string(data_type)):
        return "VARCHAR(255)"
    return _DDL[dialect].get(str(data_type), "TEXT")


def python_value(value: Any) -> Any:
    """A value from ``batch.to_pylist()`` ready for a driver parameter."""
    if isinstance(value, dict):
        return json.dumps(value, default=str)
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, decimal.Decimal):
        return value
    return value
