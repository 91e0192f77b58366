-- The connected-car demo (../shared/seed/connected-cars-demo.md), typed the way the
-- original demo types it into the ksqlDB CLI. `weir check sql/connected_cars.sql` lints it.
-- (The push query and PRINT run until cancelled when typed into the REPL.)

LIST FUNCTIONS;

CREATE STREAM carsensor (eventid integer, sensorinput varchar)
  WITH (kafka_topic='temperature', value_format='DELIMITED');

SELECT EVENTID, ANOMALY(SENSORINPUT) FROM CARSENSOR EMIT CHANGES;

CREATE STREAM ANOMALYDETECTION AS
  SELECT EVENTID, CAST (ANOMALY(SENSORINPUT) AS DOUBLE) AS ANOMALY_VAL
  FROM CARSENSOR;

CREATE STREAM ANOMALYDETECTIONWITHFILTER AS
  SELECT EVENTID, ANOMALY_VAL FROM ANOMALYDETECTION WHERE ANOMALY_VAL > 3;

SELECT * FROM ANOMALYDETECTIONWITHFILTER EMIT CHANGES;

PRINT ANOMALYDETECTIONWITHFILTER FROM BEGINNING;
