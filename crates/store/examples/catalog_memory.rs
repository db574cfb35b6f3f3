//! How much memory the catalog takes for a large number of keys: builds one
//! with `CUSTOMERS` customers and `KEYS` keys each and prints the process's
//! resident memory before and after.
//!
//!     cargo run --release -p paygate-store --example catalog_memory [CUSTOMERS [KEYS]]

use chrono::Utc;
use paygate_core::records::{CustomerRecord, KeyRecord};
use paygate_core::{apikey, CustomerId, KeyId, Plan, PlanId};
use paygate_store::Catalog;

fn rss_mb() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1).map(|v| v.parse::<u64>().ok()))
                .flatten()
        })
        .unwrap_or(0)
        / 1024
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let customers = args.first().copied().unwrap_or(100_000);
    let per = args.get(1).copied().unwrap_or(10);
    let plan: Plan = serde_json::from_value(
        serde_json::json!({"id":"p","name":"P","rate_limit":{"requests":1,"per":"second"}}),
    )?;
    let before = rss_mb();
    let now = Utc::now();
    let cs = (0..customers)
        .map(|i| {
            Ok(CustomerRecord {
                id: CustomerId::new(format!("c{i:07}"))?,
                name: format!("Customer {i}"),
                email: format!("c{i:07}@example.com"),
                plan_id: PlanId::new("p")?,
                anchor_day: 1,
                created_at: now,
            })
        })
        .collect::<Result<Vec<_>, paygate_core::ValidationError>>()?;
    let ks = (0..customers * per)
        .map(|i| {
            let k = apikey::generate();
            Ok(KeyRecord {
                id: KeyId::new(format!("k{:07}_{:02}", i / per, i % per))?,
                customer_id: CustomerId::new(format!("c{:07}", i / per))?,
                prefix: k.prefix,
                hash: [7; 32],
                created_at: now,
            })
        })
        .collect::<Result<Vec<_>, paygate_core::ValidationError>>()?;
    let records = rss_mb();
    let cat = Catalog::new(b"s".to_vec());
    cat.replace_all(vec![plan], cs, ks.into_iter().collect());
    println!(
        "{customers} customers, {} keys: RSS before {before} MB, with the records {records} MB, with the catalog {} MB (catalog holds {} keys)",
        customers * per,
        rss_mb(),
        cat.key_count()
    );
    Ok(())
}
