"""Confluent's own Python clients against Weir: its SchemaRegistryClient, pointed at Weir's
registry, with AvroSerializer, ProtobufSerializer and JSONSerializer producing to a Kafka
broker; Weir reads those topics (columns inferred from the registered schemas), writes
derived topics, and the matching deserializers read them back. Prints one line per format
and exits non-zero on any mismatch.

usage: schema_registry_client.py BOOTSTRAP WEIR_URL
"""

import json
import sys
import time

import httpx
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic
from confluent_kafka.schema_registry import SchemaRegistryClient
from confluent_kafka.schema_registry.avro import AvroDeserializer, AvroSerializer
from confluent_kafka.schema_registry.json_schema import JSONDeserializer, JSONSerializer
from confluent_kafka.schema_registry.protobuf import ProtobufDeserializer, ProtobufSerializer
from confluent_kafka.serialization import MessageField, SerializationContext
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

BOOTSTRAP, WEIR = sys.argv[1], sys.argv[2]
registry = SchemaRegistryClient({"url": WEIR})
CARS = [
    {"id": f"car-{i}", "speed": 40.5 + i * 10, "gear": i % 5, "odometer": 1_000_000 + i}
    for i in range(12)
]
# What the derived streams hold: the fast cars, speed in m/s.
EXPECTED = sorted(
    (c["id"], round(c["speed"] / 3.6, 6), c["odometer"] + 1) for c in CARS if c["speed"] > 80
)


def ksql(statement):
    # The clients produced first: the queries read from the start (ksqlDB's default is the end).
    props = {"ksql.streams.auto.offset.reset": "earliest"}
    r = httpx.post(f"{WEIR}/ksql", json={"ksql": statement, "streamsProperties": props},
                   timeout=30)
    assert r.status_code == 200, f"{statement}: {r.status_code} {r.text}"


def produce(topic, serializer, values):
    p = Producer({"bootstrap.servers": BOOTSTRAP})
    for v in values:
        ctx = SerializationContext(topic, MessageField.VALUE)
        p.produce(topic, value=serializer(v, ctx))
    assert p.flush(30) == 0, "not delivered"


def consume(topic, deserializer, count, timeout=60):
    c = Consumer({"bootstrap.servers": BOOTSTRAP, "group.id": f"check-{topic}",
                  "enable.auto.commit": False})
    # assign, not subscribe: the broker's group protocol is slow to hand out partitions.
    deadline = time.time() + timeout
    while True:
        md = c.list_topics(topic, timeout=10).topics.get(topic)
        if md is not None and md.error is None and md.partitions:
            break
        assert time.time() < deadline, f"topic {topic} never appeared"
        time.sleep(0.5)
    c.assign([TopicPartition(topic, p, 0) for p in md.partitions])
    out = []
    while len(out) < count and time.time() < deadline:
        m = c.poll(1.0)
        if m is None or m.error():
            continue
        out.append(deserializer(m.value(), SerializationContext(topic, MessageField.VALUE)))
    c.close()
    return out


def rows(values, key=lambda v: v):
    got = sorted(
        (key(v)["ID"], round(key(v)["SPEED_MS"], 6), key(v)["ODOMETER_NEXT"]) for v in values
    )
    return got


def check(name, got):
    if got != EXPECTED:
        print(f"{name}: MISMATCH\n  expected {EXPECTED}\n  got      {got}")
        sys.exit(1)
    print(f"{name}: {len(got)} records read back equal")


def derive(source_topic, fmt, sink, name=lambda c: c.upper()):
    """`name`: how a field of the registered schema is named in SQL (ksqlDB upper-cases
    Avro's and JSON's, and keeps Protobuf's as they are, to be quoted)."""
    stream = source_topic.upper().replace("-", "_")
    # No columns: Weir takes them from the schema the client registered.
    ksql(f"CREATE STREAM {stream} WITH (KAFKA_TOPIC='{source_topic}', VALUE_FORMAT='{fmt}');")
    ksql(
        f"CREATE STREAM {sink} WITH (KAFKA_TOPIC='{sink}', PARTITIONS=1) AS "
        f"SELECT {name('id')} AS ID, {name('speed')} / 3.6 AS SPEED_MS, "
        f"{name('odometer')} + 1 AS ODOMETER_NEXT "
        f"FROM {stream} WHERE {name('speed')} > 80 EMIT CHANGES;"
    )


def create_topic(name):
    # The broker does not create topics on first use.
    admin = AdminClient({"bootstrap.servers": BOOTSTRAP})
    futures = admin.create_topics([NewTopic(name, num_partitions=1, replication_factor=1)])
    futures[name].result(30)


# --- Avro -----------------------------------------------------------------------------
AVRO = json.dumps({
    "type": "record", "name": "Car", "namespace": "fleet",
    "fields": [{"name": "id", "type": "string"}, {"name": "speed", "type": "double"},
               {"name": "gear", "type": "int"}, {"name": "odometer", "type": "long"}],
})
create_topic("cars-avro")
produce("cars-avro", AvroSerializer(registry, AVRO), CARS)
derive("cars-avro", "AVRO", "FAST_AVRO")
check("avro", rows(consume("FAST_AVRO", AvroDeserializer(registry), len(EXPECTED))))

# --- JSON Schema ----------------------------------------------------------------------
JSON_SCHEMA = json.dumps({
    "$schema": "http://json-schema.org/draft-07/schema#", "title": "Car", "type": "object",
    "properties": {"id": {"type": "string"}, "speed": {"type": "number"},
                   "gear": {"type": "integer"}, "odometer": {"type": "integer"}},
    "required": ["id", "speed", "gear", "odometer"],
})
create_topic("cars-json")
produce("cars-json", JSONSerializer(JSON_SCHEMA, registry), CARS)
derive("cars-json", "JSON_SR", "FAST_JSON")
check("json_sr", rows(consume("FAST_JSON", JSONDeserializer(None, schema_registry_client=registry),
                              len(EXPECTED))))


# --- Protobuf -------------------------------------------------------------------------
def message_class(file_name, package, name, fields):
    """A generated-style message class built at run time (no protoc here)."""
    fd = descriptor_pb2.FileDescriptorProto(name=file_name, package=package, syntax="proto3")
    m = fd.message_type.add(name=name)
    for number, (field, ftype) in enumerate(fields, start=1):
        m.field.add(name=field, number=number, type=ftype,
                    label=descriptor_pb2.FieldDescriptorProto.LABEL_OPTIONAL)
    pool = descriptor_pool.DescriptorPool()
    pool.Add(fd)
    return message_factory.GetMessageClass(pool.FindMessageTypeByName(f"{package}.{name}"))


T = descriptor_pb2.FieldDescriptorProto
Car = message_class("car.proto", "fleet", "Car", [
    ("id", T.TYPE_STRING), ("speed", T.TYPE_DOUBLE), ("gear", T.TYPE_INT32),
    ("odometer", T.TYPE_INT64)])
# What Weir writes: its columns in order (ID, SPEED_MS, ODOMETER_NEXT).
Fast = message_class("fast.proto", "check", "Fast", [
    ("ID", T.TYPE_STRING), ("SPEED_MS", T.TYPE_DOUBLE), ("ODOMETER_NEXT", T.TYPE_INT64)])
create_topic("cars-proto")
produce("cars-proto", ProtobufSerializer(Car, registry, {"use.deprecated.format": False}),
        [Car(**c) for c in CARS])
derive("cars-proto", "PROTOBUF", "FAST_PROTO", name=lambda c: f"`{c}`")
fast = consume("FAST_PROTO", ProtobufDeserializer(Fast, {"use.deprecated.format": False}),
               len(EXPECTED))
check("protobuf", rows(fast, key=lambda m: {"ID": m.ID, "SPEED_MS": m.SPEED_MS,
                                          "ODOMETER_NEXT": m.ODOMETER_NEXT}))

# The registry answers as Confluent's does.
subjects = registry.get_subjects()
for s in ["cars-avro-value", "cars-json-value", "cars-proto-value", "FAST_AVRO-value",
          "FAST_JSON-value", "FAST_PROTO-value"]:
    assert s in subjects, f"{s} not in {subjects}"
latest = registry.get_latest_version("FAST_AVRO-value")
assert latest.schema.schema_type == "AVRO", latest.schema.schema_type
print("subjects:", ", ".join(sorted(subjects)))
