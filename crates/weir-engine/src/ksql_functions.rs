//! ksqlDB's built-in functions by name, as SHOW FUNCTIONS and DESCRIBE FUNCTION present
//! them: the functions a ksqlDB user can call, and nothing of DataFusion's that ksqlDB
//! does not have (TO_CHAR, DATE_BIN, ...). Each is listed only if it resolves here (a
//! scalar, higher-order, aggregate or table function the engine runs).

/// What kind of function, as ksqlDB's `function_names` entity says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Scalar,
    Aggregate,
    Table,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Scalar => "SCALAR",
            Kind::Aggregate => "AGGREGATE",
            Kind::Table => "TABLE",
        }
    }
}

/// One built-in function: name, kind, category (as ksqlDB groups them) and what it does.
pub struct Builtin {
    pub name: &'static str,
    pub kind: Kind,
    pub category: &'static str,
    pub description: &'static str,
}

const fn s(name: &'static str, category: &'static str, description: &'static str) -> Builtin {
    Builtin {
        name,
        kind: Kind::Scalar,
        category,
        description,
    }
}

const fn a(name: &'static str, description: &'static str) -> Builtin {
    Builtin {
        name,
        kind: Kind::Aggregate,
        category: "AGGREGATE",
        description,
    }
}

const fn t(name: &'static str, description: &'static str) -> Builtin {
    Builtin {
        name,
        kind: Kind::Table,
        category: "TABLE",
        description,
    }
}

const MATH: &str = "MATHEMATICAL";
const STRING: &str = "STRING";
const ARRAY: &str = "ARRAY";
const MAP: &str = "MAP";
const JSON: &str = "JSON";
const TIME: &str = "DATE / TIME";
const URL: &str = "URL";
const REGEX: &str = "REGULAR EXPRESSION";
const CONDITIONAL: &str = "CONDITIONAL";
const CONVERSION: &str = "CONVERSIONS";
const LAMBDA: &str = "LAMBDA";
const OTHER: &str = "OTHER";

/// ksqlDB's built-in functions.
pub const BUILTINS: &[Builtin] = &[
    // ---- mathematical ----
    s("ABS", MATH, "The absolute value of a number."),
    s("ACOS", MATH, "The inverse cosine of a value, in radians."),
    s("ASIN", MATH, "The inverse sine of a value, in radians."),
    s("ATAN", MATH, "The inverse tangent of a value, in radians."),
    s("ATAN2", MATH, "The angle, in radians, of the point (x, y)."),
    s("CBRT", MATH, "The cube root of a number."),
    s("CEIL", MATH, "The smallest integer not less than a number."),
    s("COS", MATH, "The cosine of an angle in radians."),
    s("COSH", MATH, "The hyperbolic cosine of a value."),
    s("COT", MATH, "The cotangent of an angle in radians."),
    s("DEGREES", MATH, "Radians converted to degrees."),
    s("EXP", MATH, "e raised to a power."),
    s(
        "FLOOR",
        MATH,
        "The largest integer not greater than a number.",
    ),
    s(
        "GENERATE_SERIES",
        MATH,
        "An array of the numbers from start to end, by a step.",
    ),
    s(
        "GEO_DISTANCE",
        MATH,
        "The great-circle distance between two points, in km or miles.",
    ),
    s(
        "GREATEST",
        MATH,
        "The largest of its arguments, NULLs ignored.",
    ),
    s(
        "LEAST",
        MATH,
        "The smallest of its arguments, NULLs ignored.",
    ),
    s("LN", MATH, "The natural logarithm of a number."),
    s(
        "LOG",
        MATH,
        "The logarithm of a number, base 10 or a given base.",
    ),
    s("PI", MATH, "The value of pi."),
    s("POWER", MATH, "A number raised to a power."),
    s("RADIANS", MATH, "Degrees converted to radians."),
    s("RANDOM", MATH, "A random DOUBLE between 0.0 and 1.0."),
    s(
        "ROUND",
        MATH,
        "A number rounded to a number of decimal places, half up.",
    ),
    s("SIGN", MATH, "The sign of a number: -1, 0 or 1."),
    s("SIN", MATH, "The sine of an angle in radians."),
    s("SINH", MATH, "The hyperbolic sine of a value."),
    s("SQRT", MATH, "The square root of a number."),
    s("TAN", MATH, "The tangent of an angle in radians."),
    s("TANH", MATH, "The hyperbolic tangent of a value."),
    s(
        "TRUNC",
        MATH,
        "A number truncated to a number of decimal places.",
    ),
    // ---- strings ----
    s("CHR", STRING, "The character of a Unicode code point."),
    s("CONCAT", STRING, "Its arguments concatenated."),
    s(
        "CONCAT_WS",
        STRING,
        "Its arguments concatenated with a separator.",
    ),
    s(
        "ENCODE",
        STRING,
        "A string re-encoded: hex, utf8, ascii or base64.",
    ),
    s(
        "FROM_BYTES",
        STRING,
        "BYTES as a string: hex, utf8, ascii or base64.",
    ),
    s("INITCAP", STRING, "Each word capitalized."),
    s(
        "INSTR",
        STRING,
        "The position of a substring, from an occurrence and position.",
    ),
    s("LCASE", STRING, "A string in lower case."),
    s("LEN", STRING, "The length of a string or BYTES."),
    s(
        "LPAD",
        STRING,
        "A string or BYTES padded on the left to a length.",
    ),
    s("MASK", STRING, "A string with letters and digits masked."),
    s(
        "MASK_KEEP_LEFT",
        STRING,
        "A string masked except its first characters.",
    ),
    s(
        "MASK_KEEP_RIGHT",
        STRING,
        "A string masked except its last characters.",
    ),
    s(
        "MASK_LEFT",
        STRING,
        "A string with its first characters masked.",
    ),
    s(
        "MASK_RIGHT",
        STRING,
        "A string with its last characters masked.",
    ),
    s(
        "REPLACE",
        STRING,
        "A string with every occurrence of a substring replaced.",
    ),
    s(
        "RPAD",
        STRING,
        "A string or BYTES padded on the right to a length.",
    ),
    s(
        "SPLIT",
        STRING,
        "A string or BYTES split at a delimiter into an array.",
    ),
    s(
        "SPLIT_TO_MAP",
        STRING,
        "A string of entries split into a map.",
    ),
    s(
        "SUBSTRING",
        STRING,
        "Part of a string or BYTES, from a position and length.",
    ),
    s(
        "TO_BYTES",
        STRING,
        "A string as BYTES: hex, utf8, ascii or base64.",
    ),
    s(
        "TRIM",
        STRING,
        "A string without leading and trailing whitespace.",
    ),
    s("UCASE", STRING, "A string in upper case."),
    s("UUID", STRING, "A random UUID."),
    // ---- regular expressions ----
    s(
        "REGEXP_EXTRACT",
        REGEX,
        "The first match of a pattern, or of one of its groups.",
    ),
    s(
        "REGEXP_EXTRACT_ALL",
        REGEX,
        "Every match of a pattern, or of one of its groups.",
    ),
    s(
        "REGEXP_REPLACE",
        REGEX,
        "A string with every match of a pattern replaced.",
    ),
    s(
        "REGEXP_SPLIT_TO_ARRAY",
        REGEX,
        "A string split at every match of a pattern.",
    ),
    // ---- JSON ----
    s(
        "EXTRACTJSONFIELD",
        JSON,
        "The value at a JSONPath of a JSON string.",
    ),
    s("IS_JSON_STRING", JSON, "Whether a string is valid JSON."),
    s(
        "JSON_ARRAY_CONTAINS",
        JSON,
        "Whether a JSON array string holds a value.",
    ),
    s(
        "JSON_ARRAY_LENGTH",
        JSON,
        "The length of a JSON array string.",
    ),
    s(
        "JSON_CONCAT",
        JSON,
        "JSON objects merged, or JSON arrays concatenated.",
    ),
    s(
        "JSON_ITEMS",
        JSON,
        "The items of a JSON array string, as JSON strings.",
    ),
    s("JSON_KEYS", JSON, "The keys of a JSON object string."),
    s(
        "JSON_RECORDS",
        JSON,
        "The fields of a JSON object string as a map.",
    ),
    s("TO_JSON_STRING", JSON, "Any value as JSON text."),
    // ---- arrays ----
    s("ARRAY_CONCAT", ARRAY, "Two arrays joined."),
    s("ARRAY_CONTAINS", ARRAY, "Whether an array holds a value."),
    s("ARRAY_DISTINCT", ARRAY, "An array without its duplicates."),
    s(
        "ARRAY_EXCEPT",
        ARRAY,
        "The elements of an array not in another.",
    ),
    s("ARRAY_INTERSECT", ARRAY, "The elements two arrays share."),
    s(
        "ARRAY_JOIN",
        ARRAY,
        "An array's elements joined into a string.",
    ),
    s("ARRAY_LENGTH", ARRAY, "The number of elements of an array."),
    s("ARRAY_MAX", ARRAY, "The largest element of an array."),
    s("ARRAY_MIN", ARRAY, "The smallest element of an array."),
    s(
        "ARRAY_REMOVE",
        ARRAY,
        "An array without the elements equal to a value.",
    ),
    s("ARRAY_SORT", ARRAY, "An array sorted, NULLs last."),
    s("ARRAY_UNION", ARRAY, "The distinct elements of two arrays."),
    s("ELT", ARRAY, "The n-th of its string arguments."),
    s(
        "FIELD",
        ARRAY,
        "The position of a string among its other arguments.",
    ),
    s(
        "SLICE",
        ARRAY,
        "Part of an array, from a position to a position.",
    ),
    // ---- maps ----
    s(
        "AS_MAP",
        MAP,
        "A map made of an array of keys and an array of values.",
    ),
    s(
        "ENTRIES",
        MAP,
        "A map's entries as an array of STRUCT<K, V>.",
    ),
    s("MAP_KEYS", MAP, "A map's keys."),
    s("MAP_UNION", MAP, "Maps merged, later keys winning."),
    s("MAP_VALUES", MAP, "A map's values."),
    // ---- lambdas ----
    s(
        "FILTER",
        LAMBDA,
        "The elements of an array or map a lambda keeps.",
    ),
    s(
        "REDUCE",
        LAMBDA,
        "An array or map folded into a state by a lambda.",
    ),
    s(
        "TRANSFORM",
        LAMBDA,
        "An array's or map's elements changed by lambdas.",
    ),
    // ---- date and time ----
    s(
        "CONVERT_TZ",
        TIME,
        "A TIMESTAMP converted between time zones.",
    ),
    s("DATEADD", TIME, "A DATE plus a number of time units."),
    s("DATESUB", TIME, "A DATE minus a number of time units."),
    s(
        "DATETOSTRING",
        TIME,
        "Days since the epoch formatted with a pattern.",
    ),
    s("FORMAT_DATE", TIME, "A DATE formatted with a pattern."),
    s("FORMAT_TIME", TIME, "A TIME formatted with a pattern."),
    s(
        "FORMAT_TIMESTAMP",
        TIME,
        "A TIMESTAMP formatted with a pattern, in a time zone.",
    ),
    s("FROM_DAYS", TIME, "Days since the epoch as a DATE."),
    s(
        "FROM_UNIXTIME",
        TIME,
        "Milliseconds since the epoch as a TIMESTAMP.",
    ),
    s(
        "PARSE_DATE",
        TIME,
        "A string parsed into a DATE with a pattern.",
    ),
    s(
        "PARSE_TIME",
        TIME,
        "A string parsed into a TIME with a pattern.",
    ),
    s(
        "PARSE_TIMESTAMP",
        TIME,
        "A string parsed into a TIMESTAMP with a pattern.",
    ),
    s(
        "STRINGTODATE",
        TIME,
        "A string parsed into days since the epoch.",
    ),
    s(
        "STRINGTOTIMESTAMP",
        TIME,
        "A string parsed into milliseconds since the epoch.",
    ),
    s("TIMEADD", TIME, "A TIME plus a number of time units."),
    s("TIMESUB", TIME, "A TIME minus a number of time units."),
    s(
        "TIMESTAMPADD",
        TIME,
        "A TIMESTAMP plus a number of time units.",
    ),
    s(
        "TIMESTAMPSUB",
        TIME,
        "A TIMESTAMP minus a number of time units.",
    ),
    s(
        "TIMESTAMPTOSTRING",
        TIME,
        "Milliseconds since the epoch formatted with a pattern.",
    ),
    s(
        "UNIX_DATE",
        TIME,
        "A DATE, or today, as days since the epoch.",
    ),
    s(
        "UNIX_TIMESTAMP",
        TIME,
        "A TIMESTAMP, or now, as milliseconds since the epoch.",
    ),
    // ---- URLs ----
    s("URL_DECODE_PARAM", URL, "A URL parameter decoded."),
    s(
        "URL_ENCODE_PARAM",
        URL,
        "A string encoded for a URL parameter.",
    ),
    s("URL_EXTRACT_FRAGMENT", URL, "The fragment of a URL."),
    s("URL_EXTRACT_HOST", URL, "The host of a URL."),
    s(
        "URL_EXTRACT_PARAMETER",
        URL,
        "The value of a query parameter of a URL.",
    ),
    s("URL_EXTRACT_PATH", URL, "The path of a URL."),
    s("URL_EXTRACT_PORT", URL, "The port of a URL."),
    s("URL_EXTRACT_PROTOCOL", URL, "The protocol of a URL."),
    s("URL_EXTRACT_QUERY", URL, "The query string of a URL."),
    // ---- conditional and conversions ----
    s(
        "COALESCE",
        CONDITIONAL,
        "The first of its arguments that is not NULL.",
    ),
    s(
        "IFNULL",
        CONDITIONAL,
        "A value, or another when it is NULL.",
    ),
    s(
        "NULLIF",
        CONDITIONAL,
        "NULL when two values are equal, else the first.",
    ),
    s("BIGINT_FROM_BYTES", CONVERSION, "BYTES read as a BIGINT."),
    s("DOUBLE_FROM_BYTES", CONVERSION, "BYTES read as a DOUBLE."),
    s("INT_FROM_BYTES", CONVERSION, "BYTES read as an INTEGER."),
    s("AS_VALUE", OTHER, "A key column copied into the value."),
    // ---- aggregates ----
    a(
        "ATTR",
        "The group's value when all its values are the same, else NULL.",
    ),
    a("AVG", "The average of the group's values."),
    a("COLLECT_LIST", "The group's values as an array."),
    a("COLLECT_SET", "The group's distinct values as an array."),
    a(
        "CORRELATION",
        "The correlation of two columns over the group.",
    ),
    a(
        "COUNT",
        "The number of rows, or of values that are not NULL.",
    ),
    a("COUNT_DISTINCT", "The number of distinct values."),
    a(
        "EARLIEST_BY_OFFSET",
        "The group's earliest value (or n earliest) by offset.",
    ),
    a("HISTOGRAM", "A map of each value to its count."),
    a(
        "LATEST_BY_OFFSET",
        "The group's latest value (or n latest) by offset.",
    ),
    a("MAX", "The largest value."),
    a("MIN", "The smallest value."),
    a(
        "STDDEV_SAMP",
        "The sample variance of the group's values, as ksqlDB computes it.",
    ),
    a(
        "STDDEV_SAMPLE",
        "The sample standard deviation of the group's values.",
    ),
    a("SUM", "The sum of the group's values."),
    a(
        "SUM_LIST",
        "The sum of every element of the group's arrays.",
    ),
    a("TOPK", "The k largest values, in order."),
    a("TOPKDISTINCT", "The k largest distinct values, in order."),
    // ---- table functions ----
    t(
        "CUBE_EXPLODE",
        "A row for each combination of an array's elements, kept or NULL.",
    ),
    t("EXPLODE", "A row for each element of an array."),
];

/// The built-in function of this name (any case).
pub fn find(name: &str) -> Option<&'static Builtin> {
    BUILTINS.iter().find(|b| b.name.eq_ignore_ascii_case(name))
}
