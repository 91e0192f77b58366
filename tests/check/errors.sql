-- Each bad statement is reported with its line and column; the good ones around it still pass.
CREATE STREAM readings (car_id INT KEY, speed DOUBLE)
  WITH (kafka_topic='readings', value_format='JSON');
SELECT car_id, speed FROM readings WHERE EMIT CHANGES;
SELECT car_id FROM readings WINDOW TUMBLING (SIZE 10 FORTNIGHTS) GROUP BY car_id;
CREATE STREAM s2 (id INT PRIMARY KEY) WITH (kafka_topic='s2', value_format='JSON');
CREATE TABLE t2 (id INT KEY) WITH (kafka_topic='t2', value_format='JSON');
SELECT 9223372036854775808 FROM readings;
SELECT * FROM readings PARTITION BY car_id AND speed;
SELECT CAST(speed AS NULL) FROM readings;
SELEC * FROM readings;
INSERT INTO readings (car_id, speed) VALUES (1, 88.5);
RUN SCRIPT 'other.sql';
SELECT * FROM readings WHERE car_id IN ();
SELECT 'unterminated FROM readings;
