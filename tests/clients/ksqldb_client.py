"""Drives a Weir server with PyPI's `ksqldb` client (Victor Grosu's KSQLdbClient: requests
for /ksql and /close-query, httpx over HTTP/2 for /query-stream and /inserts-stream),
unchanged: statements, inserts, a push and a pull query, variables and errors.

Usage: python ksqldb_client.py http://127.0.0.1:PORT   (exits non-zero on any mismatch)
"""

import asyncio
import sys

import requests
from ksqldb import KSQLdbClient


def check(cond, what):
    if not cond:
        print(f"FAILED: {what}", file=sys.stderr)
        sys.exit(1)
    print(f"ok: {what}")


url = sys.argv[1]
client = KSQLdbClient(url)
earliest = {"auto.offset.reset": "earliest"}

# Statements, with a variable DEFINEd in the same request.
created = client.ksql(
    "DEFINE topic = 'ksqldb_readings'; "
    "CREATE STREAM readings (car STRING KEY, speed DOUBLE) "
    "WITH (kafka_topic='${topic}', value_format='JSON', partitions=1); "
    "CREATE TABLE fastest AS SELECT car, MAX(speed) AS top FROM readings GROUP BY car;"
)
check(len(created) == 2, "two entities for two statements (DEFINE answers none)")
check(created[0]["commandStatus"]["message"] == "Stream created", "stream created")
check("fastest" in created[1]["commandStatus"]["message"].lower(), "table's query started")
streams = client.ksql("SHOW STREAMS;")[0]["streams"]
check(
    any(s["name"] == "READINGS" and s["topic"] == "ksqldb_readings" for s in streams),
    "the stream is listed on the topic the variable named",
)
check("auto.offset.reset" in str(client.get_properties()), "properties listed")

# Inserts over /inserts-stream (HTTP/2): one acknowledgement per row.
acks = client.inserts_stream(
    "READINGS",
    [
        {"CAR": "a", "SPEED": 50.0},
        {"CAR": "b", "SPEED": 70.0},
        {"CAR": "a", "SPEED": 90.0},
    ],
)
check(
    [a.get("status") for a in acks] == ["ok", "ok", "ok"],
    f"3 rows acknowledged over HTTP/2: {acks}",
)


# A push query (HTTP/2 /query-stream): the header, then rows until LIMIT.
async def push():
    lines = []
    async for line in client.query_async(
        "SELECT car, speed FROM readings EMIT CHANGES LIMIT 3;",
        stream_properties=earliest,
        timeout=30,
    ):
        lines.append(line)
    return lines


lines = asyncio.run(push())
check(lines[0]["columnNames"] == ["CAR", "SPEED"], f"push header: {lines[0]}")
check(
    lines[1:] == [["a", 50.0], ["b", 70.0], ["a", 90.0]],
    f"push rows: {lines[1:]}",
)

# A pull query on the table, waiting for the aggregation to catch up.
for _ in range(100):
    pulled = client.query_sync("SELECT * FROM fastest WHERE car = 'a';", timeout=30)
    if len(pulled) == 2 and pulled[1] == ["a", 90.0]:
        break
    asyncio.run(asyncio.sleep(0.1))
check(pulled[1:] == [["a", 90.0]], f"pull query: {pulled}")

# Errors: the client raises on a 4xx; the body is ksqlDB's error entity.
try:
    client.ksql("SELECT nosuch FROM readings;")
    check(False, "a pull/push query on /ksql is refused")
except requests.HTTPError as e:
    body = e.response.json()
    check(e.response.status_code == 400, "refused with 400")
    check(body["error_code"] == 40002, f"error code 40002: {body}")
try:
    client.ksql("DESCRIBE ${nosuch};")
    check(False, "an undefined variable is refused")
except requests.HTTPError as e:
    body = e.response.json()
    check("Variable 'NOSUCH' is not defined" in body["message"], f"says which: {body['message']}")
try:
    client.ksql("SELEC 1;")
    check(False, "a syntax error is refused")
except requests.HTTPError as e:
    body = e.response.json()
    check(body["@type"] == "statement_error", f"statement_error: {body['@type']}")

print("ksqldb client: statements, inserts, push, pull, variables and errors all as expected")
