//! Any bytes as the body of `POST /v1/sync`: decoding and validation must answer with a
//! request that passed every check or with a typed error, never panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use roster_protocol::{ErrorCode, Schema};
use roster_protocol::validate::decode_request;

fuzz_target!(|body: &[u8]| {
    let schema = Schema::default_person();
    match decode_request(body, &schema) {
        Ok(request) => {
            for change in &request.changes {
                let Ok(table) = schema.table(&change.table) else {
                    panic!("a change of an unknown table passed validation");
                };
                for column in change.fields.iter().flat_map(|fields| fields.keys()) {
                    assert!(
                        table.columns.iter().any(|c| &c.name == column),
                        "an unknown column passed validation"
                    );
                }
            }
        }
        Err(error) => assert_ne!(error.error.code, ErrorCode::Internal),
    }
});
