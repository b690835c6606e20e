//! DESIGN §1.3's value rules through the whole Postgres path: a golden row of many
//! types, written once under default session settings and once under hostile ones,
//! must reach the receiver as byte-identical images.

use std::time::Duration;

use serde::Deserialize;
use serde_json::value::RawValue;

use crate::harness::*;

const SCHEMA: &str = r#"
create type mood as enum ('sad', 'ok', 'happy');
create type pair as (n numeric, b bytea, t timestamptz, i int8);
create domain amount as numeric(12, 2);
create domain big_id as bigint;
create domain tag_list as text[];
create domain pairs as pair[];
create table golden (
    id            integer primary key,
    c_int2        smallint,
    c_int4        integer,
    c_int8        bigint,
    c_int8_big    bigint,
    c_int8_min    bigint,
    c_num         numeric,
    c_num_scale   numeric(10, 2),
    c_num_nan     numeric,
    c_num_inf     numeric,
    c_float4      real,
    c_float8      double precision,
    c_float8_nan  double precision,
    c_float8_inf  double precision,
    c_money       money,
    c_money_neg   money,
    c_bool        boolean,
    c_text        text,
    c_varchar     varchar(10),
    c_char        char(5),
    c_bytea       bytea,
    c_uuid        uuid,
    c_date        date,
    c_date_bc     date,
    c_date_far    date,
    c_date_inf    date,
    c_time        time,
    c_timetz      timetz,
    c_ts          timestamp,
    c_ts3         timestamp(3),
    c_tstz        timestamptz,
    c_tstz_lmt    timestamptz,
    c_tstz_bc     timestamptz,
    c_tstz_far    timestamptz,
    c_tstz_inf    timestamptz,
    c_interval    interval,
    c_interval_neg interval,
    c_json        json,
    c_jsonb       jsonb,
    c_inet        inet,
    c_cidr        cidr,
    c_macaddr     macaddr,
    c_bit         bit(4),
    c_varbit      varbit,
    c_point       point,
    c_int4range   int4range,
    c_numrange    numrange,
    c_tstzrange   tstzrange,
    c_enum        mood,
    c_dom_num     amount,
    c_dom_big     big_id,
    c_dom_arr     tag_list,
    c_int_arr     integer[],
    c_num_arr     numeric[],
    c_int8_arr    bigint[],
    c_int8_2d     bigint[][],
    c_tstz_arr    timestamptz[],
    c_bytea_arr   bytea[],
    c_comp        pair,
    c_comp_arr    pair[],
    c_dom_comp_arr pairs,
    c_xml         xml,
    c_tsvector    tsvector,
    c_nulls       text,
    c_toast       text
);
"#;

/// The golden values, after `id`; the same SQL text under either session.
const VALUES: &str = r#"
    1, 2147483647, 42, 9007199254740993, -9223372036854775808,
    12345678901234567890.000000001, 19.9, 'NaN', '-Infinity',
    3.1415927, 0.30000000000000004, 'NaN', 'Infinity',
    1234567.891::numeric::money, (-1234.5)::numeric::money,
    true, E'tab\there "quoted" \\ back', 'vär', 'ab',
    '\x00ff10'::bytea, 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11',
    '2026-11-22', '0044-03-15 BC', '12345-01-01', 'infinity',
    '13:14:15.5', '13:14:15+05:30', '2026-11-22 20:01:02.5', '2026-11-22 20:01:02.123456',
    '2026-11-22 20:01:02.345678+00', '1850-01-01 00:00+00', '0044-03-15 10:00+00 BC',
    '12345-06-07 08:09:10+00', '-infinity',
    '1 year 2 mons 3 days 04:05:06.5', '-1 days +02:00',
    '{"b": 1, "a": [1.50, true], "a": null}', '{"b": 1, "a": [1.50, true]}',
    '192.168.0.1/24', '10.0.0.0/8', '08:00:2b:01:02:03',
    B'1010', B'101', '(1.5,2)', '[1,5)', '[1.5,2.25]',
    '[2026-01-01 00:00+00,2026-02-01 00:00+00)',
    'happy', 19.9, 9007199254740993, '{a,b}',
    '{1,2,3}', '{1.5,NaN,-2}', '{1,9007199254740993,null}', '{{1,2},{3,9223372036854775807}}',
    '{"2026-11-22 20:01:02+00","1850-01-01 00:00+00"}', '{"\\x00ff",null}',
    row(1.25, '\xdead'::bytea, '2026-11-22 20:01:02+00', 9007199254740993)::public.pair,
    array[row(0.5, null, '1850-01-01 00:00+00', 1)::public.pair],
    array[row(2.5, '\x01'::bytea, null, -9007199254740993)::public.pair]::public.pairs,
    '<a>x</a>', 'a fat cat', null, repeat('toasted ', 40000)
"#;

/// A writer session that changes every setting that used to leak into events.
const HOSTILE: &str = "
set timezone = 'Asia/Kolkata';
set datestyle = 'SQL, DMY';
set intervalstyle = 'postgres_verbose';
set extra_float_digits = 0;
set bytea_output = 'escape';
set lc_monetary = 'C.utf8';
set search_path = pg_catalog;
";

#[derive(Deserialize)]
struct Images<'a> {
    #[serde(borrow)]
    key: &'a RawValue,
    #[serde(borrow)]
    before: Option<&'a RawValue>,
    #[serde(borrow)]
    after: Option<&'a RawValue>,
}

/// An image with its `"id":N,` prefix removed, so rows 1 and 2 compare whole.
fn without_id(image: &str) -> String {
    let rest = image
        .strip_prefix("{\"id\":")
        .and_then(|r| r.split_once(','))
        .map(|(_, r)| r)
        .unwrap_or_else(|| panic!("image starts with its id: {image}"));
    format!("{{{rest}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn golden_values_are_the_same_bytes_whatever_the_writers_session() {
    let env = Env::new().await;
    let db = env.source.connect().await;
    db.batch_execute(SCHEMA).await.unwrap();
    let mut cfg = env.config();
    cfg.sources[0].tables = vec!["public.golden".into()];
    let relay = start_relay(cfg).await;
    let api = Api::new(relay.api_addr);
    let rx = TestReceiver::start().await;
    api.subscribe(&rx.url, serde_json::json!({"event_types": ["golden.*"]}))
        .await;

    db.batch_execute(&format!("insert into public.golden values (1, {VALUES})"))
        .await
        .unwrap();
    let hostile = env.source.connect().await;
    hostile
        .batch_execute(&format!(
            "{HOSTILE} insert into public.golden values (2, {VALUES})"
        ))
        .await
        .unwrap();
    // An update that leaves the TOAST-sized value alone, from the hostile session
    // (the row trigger), and a delete (the statement trigger).
    hostile
        .batch_execute("update public.golden set c_int8 = c_int8 + 1 where id = 2; delete from public.golden where id = 1")
        .await
        .unwrap();

    let got = rx.wait_delivered(4, Duration::from_secs(60)).await;
    let bodies: Vec<(String, String)> = got
        .iter()
        .map(|r| {
            let v: serde_json::Value = r.json();
            (
                v["type"].as_str().unwrap().to_owned(),
                String::from_utf8(r.body.to_vec()).unwrap(),
            )
        })
        .collect();
    let find = |ty: &str, id: &str| -> &str {
        bodies
            .iter()
            .find(|(t, b)| {
                t == ty
                    && serde_json::from_str::<Images>(b).unwrap().key.get()
                        == format!("{{\"id\":{id}}}")
            })
            .map(|(_, b)| b.as_str())
            .unwrap_or_else(|| panic!("no {ty} for id {id}"))
    };
    let insert_default: Images = serde_json::from_str(find("golden.insert", "1")).unwrap();
    let insert_hostile: Images = serde_json::from_str(find("golden.insert", "2")).unwrap();
    let update_hostile: Images = serde_json::from_str(find("golden.update", "2")).unwrap();
    let delete_default: Images = serde_json::from_str(find("golden.delete", "1")).unwrap();

    let golden = without_id(insert_default.after.unwrap().get());
    assert_eq!(
        without_id(insert_hostile.after.unwrap().get()),
        golden,
        "the hostile session's insert"
    );
    assert_eq!(
        without_id(delete_default.before.unwrap().get()),
        golden,
        "the delete's before image"
    );
    assert_eq!(
        without_id(update_hostile.before.unwrap().get()),
        golden,
        "the update's before image"
    );
    let after = without_id(update_hostile.after.unwrap().get());
    assert_eq!(
        after,
        golden.replacen("\"c_int8\":42", "\"c_int8\":43", 1),
        "the update's after image: only c_int8 changed, the TOAST value kept"
    );
    assert_eq!(
        without_id(&golden_expected()),
        golden,
        "the contract's forms"
    );
    relay.shutdown().await;
}

/// What DESIGN §1.3 says each golden value becomes, in column order (checked by hand
/// against the rules, value by value).
fn golden_expected() -> String {
    let image = r#"{"id":0,"c_int2":1,"c_int4":2147483647,"c_int8":42,"c_int8_big":"9007199254740993","c_int8_min":"-9223372036854775808","c_num":"12345678901234567890.000000001","c_num_scale":"19.90","c_num_nan":"NaN","c_num_inf":"-Infinity","c_float4":3.1415927,"c_float8":0.30000000000000004,"c_float8_nan":"NaN","c_float8_inf":"Infinity","c_money":"1234567.89","c_money_neg":"-1234.50","c_bool":true,"c_text":"tab\there \"quoted\" \\ back","c_varchar":"vär","c_char":"ab   ","c_bytea":"AP8Q","c_uuid":"a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11","c_date":"2026-11-22","c_date_bc":"-0043-03-15","c_date_far":"+12345-01-01","c_date_inf":"infinity","c_time":"13:14:15.5","c_timetz":"13:14:15+05:30","c_ts":"2026-11-22T20:01:02.500Z","c_ts3":"2026-11-22T20:01:02.123Z","c_tstz":"2026-11-22T20:01:02.345678Z","c_tstz_lmt":"1850-01-01T00:00:00Z","c_tstz_bc":"-0043-03-15T10:00:00Z","c_tstz_far":"+12345-06-07T08:09:10Z","c_tstz_inf":"-infinity","c_interval":"P1Y2M3DT4H5M6.5S","c_interval_neg":"P-1DT2H","c_json":{"b": 1, "a": [1.50, true], "a": null},"c_jsonb":{"a": [1.50, true], "b": 1},"c_inet":"192.168.0.1/24","c_cidr":"10.0.0.0/8","c_macaddr":"08:00:2b:01:02:03","c_bit":"1010","c_varbit":"101","c_point":"(1.5,2)","c_int4range":"[1,5)","c_numrange":"[1.5,2.25]","c_tstzrange":"[\"2026-01-01 00:00:00+00\",\"2026-02-01 00:00:00+00\")","c_enum":"happy","c_dom_num":"19.90","c_dom_big":"9007199254740993","c_dom_arr":["a","b"],"c_int_arr":[1,2,3],"c_num_arr":["1.5","NaN","-2"],"c_int8_arr":[1,"9007199254740993",null],"c_int8_2d":[[1,2],[3,"9223372036854775807"]],"c_tstz_arr":["2026-11-22T20:01:02Z","1850-01-01T00:00:00Z"],"c_bytea_arr":["AP8=",null],"c_comp":{"n":"1.25","b":"3q0=","t":"2026-11-22T20:01:02Z","i":"9007199254740993"},"c_comp_arr":[{"n":"0.5","b":null,"t":"1850-01-01T00:00:00Z","i":1}],"c_dom_comp_arr":[{"n":"2.5","b":"AQ==","t":null,"i":"-9007199254740993"}],"c_xml":"<a>x</a>","c_tsvector":"'a' 'cat' 'fat'","c_nulls":null,"c_toast":"TOAST"}"#;
    image.replacen("TOAST", &"toasted ".repeat(40_000), 1)
}
