-- One of each statement family, in the case and spacing people type.
create stream pageviews (viewtime bigint, userid varchar KEY, pageid varchar)
  with (kafka_topic='pageviews', value_format='JSON', partitions=2, timestamp='viewtime');
create table users (userid varchar primary key, regionid varchar, `Address` struct<street string, `zip code` int>)
  with (kafka_topic='users', value_format='json');
create type address as struct<number int, street varchar, tags array<string>>;
create stream enriched with (kafka_topic='enriched') as
  select p.userid, p.pageid, u.regionid, u.`Address`->street as street
  from pageviews p left join users u on p.userid = u.userid
  emit changes;
create table pages_per_region as
  select regionid, count(*) as views, latest_by_offset(pageid) as last_page
  from enriched
  window hopping (size 30 seconds, advance by 10 seconds, grace period 1 minute)
  where regionid is not null
  group by regionid
  having count(*) > 1;
create stream clicks_a (id int key, ts bigint) with (kafka_topic='a', value_format='json');
create stream clicks_b (id int key, ts bigint) with (kafka_topic='b', value_format='json');
select a.id, b.ts - a.ts as lag from clicks_a a inner join clicks_b b within (0 seconds, 5 minutes) on a.id = b.id emit changes limit 10;
insert into clicks_a select * from clicks_b;
insert into clicks_a (id, ts) values (1, 1700000000000);
select transform(array[1, 2, 3], x => x * 2), filter(map('a' := 1), (k, v) => v > 0), struct(a := 1) from clicks_a emit changes;
select * from users where userid = 'u1';
show streams; list tables extended; show topics; show queries; show properties; show functions; show types;
describe enriched extended; describe function latest_by_offset; explain select * from users;
terminate all; pause all; resume all;
print 'pageviews' from beginning interval 10 limit 3;
set 'auto.offset.reset' = 'earliest'; unset 'auto.offset.reset';
define region = 'eu'; undefine region;
drop stream if exists enriched delete topic; drop table pages_per_region; drop type address;
