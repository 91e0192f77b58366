"""Drives a Weir server with ksql-python-ng, a ksqlDB client nobody here wrote.

    python ksql_python_ng_client.py http://127.0.0.1:PORT

It creates a stream, lists streams, inserts rows over /inserts-stream (HTTP/2), reads
them back with a push query over /query-stream (HTTP/2) and closes it with /close-query,
then runs a LIMIT query over the old /query endpoint (HTTP/1.1). Exits non-zero with the
reason on the first thing that is not as a ksqlDB server would answer.
"""
import json
import sys

from ksql import KSQLAPI


def check(ok, what):
    """Fails with `what` unless `ok` (not `assert`, which `python -O` removes)."""
    if not ok:
        sys.exit(f"unexpected: {what!r}")


url = sys.argv[1]
client = KSQLAPI(url, timeout=20)  # asks /info for the server's version

created = client.ksql(
    "CREATE STREAM riders (rider_id VARCHAR KEY, lat DOUBLE, lon DOUBLE) "
    "WITH (kafka_topic='riders', value_format='JSON', partitions=1);"
)
check(created[0]["@type"] == "currentStatus", created)
check(created[0]["commandStatus"]["status"] == "SUCCESS", created)

streams = client.ksql("SHOW STREAMS;")[0]["streams"]
check(any(s["name"] == "RIDERS" and s["topic"] == "riders" for s in streams), streams)

acks = client.inserts_stream(
    "RIDERS",
    [
        {"RIDER_ID": "alice", "LAT": 52.5, "LON": 13.4},
        {"rider_id": "bob", "lat": 48.9, "lon": 2.35},
    ],
)
check([a["status"] for a in acks] == ["ok", "ok"], acks)
# A bad row is refused on its own; the rows after it go in.
acks = client.inserts_stream(
    "RIDERS", [{"NO_SUCH_COLUMN": 1}, {"RIDER_ID": "carol", "LAT": 40.4, "LON": -3.7}]
)
check([a["status"] for a in acks] == ["error", "ok"], acks)
check("NO_SUCH_COLUMN" in acks[0]["message"], acks)

# A push query over HTTP/2: header, rows as they come; closed by /close-query.
text = ""
header = None
rows = []
closed = None
for chunk in client.query(
    "SELECT rider_id, lat FROM riders EMIT CHANGES;",
    use_http2=True,
    stream_properties={"auto.offset.reset": "earliest"},
):
    text += chunk
    while "\n" in text:
        line, text = text.split("\n", 1)
        if not line.strip():
            continue
        value = json.loads(line)
        if header is None:
            header = value
        else:
            rows.append(value)
    if len(rows) == 3 and closed is None:
        closed = client.close_query(header["queryId"])
check(header["columnNames"] == ["RIDER_ID", "LAT"], header)
check(header["columnTypes"] == ["STRING", "DOUBLE"], header)
check(rows == [["alice", 52.5], ["bob", 48.9], ["carol", 40.4]], rows)
check(closed is True, closed)
check(client.close_query(header["queryId"]) is False, "closing twice should fail")

# The old /query endpoint over HTTP/1.1: a JSON array, one element per line.
body = "".join(
    client.query(
        "SELECT rider_id FROM riders EMIT CHANGES LIMIT 2;",
        stream_properties={"ksql.streams.auto.offset.reset": "earliest"},
    )
)
elements = json.loads(body)
check(elements[0]["header"]["schema"] == "`RIDER_ID` STRING", elements)
check([e["row"]["columns"] for e in elements[1:3]] == [["alice"], ["bob"]], elements)
check(elements[3] == {"finalMessage": "Limit Reached"}, elements)

print(f"ksql-python-ng: {len(rows)} rows over HTTP/2, query {header['queryId']} closed, old API ok")
