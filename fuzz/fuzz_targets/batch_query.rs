//! The query string of `GET /pusher/batch-authenticate?app_id=&socket_id=&channels=…`, read by
//! `porter_gateway::http::fields::Fields::from_form` and then as the handler does.
//!
//! Invariants: nothing panics; `first` is the first of `all`; `any_of` of two keys is every
//! value of either, in order; `indexed` returns the values of keys `key[i]` in index
//! order; the channels parse or are refused, never panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use porter_core::channel::{Channel, validate_socket_id};
use porter_gateway::http::fields::Fields;

fuzz_target!(|data: &[u8]| {
    let query = Fields::from_form(data);
    for key in ["app_id", "socket_id", "channels", "channels[]"] {
        assert_eq!(query.first(key), query.all(key).next());
    }
    let channels: Vec<&str> = query.any_of(&["channels", "channels[]"]).collect();
    let plain = query.all("channels").count();
    let bracketed = query.all("channels[]").count();
    assert_eq!(channels.len(), plain + bracketed);
    if let Some(socket_id) = query.first("socket_id") {
        let _ = validate_socket_id(socket_id);
    }
    for channel in &channels {
        let _ = Channel::parse(channel);
    }
    // The plugin's indexed form can also arrive as a query string: its values come from
    // `channel_name[i]` keys only, and in index order.
    let indexed = query.indexed("channel_name");
    let first_few: Vec<String> = (0..4)
        .filter_map(|i| {
            query
                .first(&format!("channel_name[{i}]"))
                .map(str::to_owned)
        })
        .collect();
    if first_few.len() == 4 && indexed.len() == 4 {
        assert_eq!(indexed, first_few);
    }
});
