//! The port contract suite (`integration_tests::contract`), run against both
//! implementations of every port: the in-memory twins and the AWS adapters on the emulator.

use integration_tests::{aws_ports, contract, memory_parts, memory_ports};
use shared::adapters::clock::ManualClock;

macro_rules! both {
    ($($case:ident),* $(,)?) => {
        mod memory {
            use super::*;
            $(
                #[tokio::test]
                async fn $case() {
                    contract::$case(&memory_ports(ManualClock::starting_now())).await;
                }
            )*
        }
        mod dynamo {
            use super::*;
            $(
                #[tokio::test]
                async fn $case() {
                    let (ports, _, _) = aws_ports(ManualClock::starting_now(), &[]).await;
                    contract::$case(&ports).await;
                }
            )*
        }
    };
}

both!(
    money,
    releases,
    ledger,
    accounts,
    requests,
    batches,
    tasks,
    born_with_hold,
    keys,
    rate_windows,
    usage,
    endpoints,
    events,
    deliveries,
    exports,
    queue,
    blobs,
    sealer,
    shares,
    sessions,
    sla,
    invoices,
);

#[tokio::test]
async fn memory_only_stale_index_reads_miss_recent_writes() {
    let (ports, memory) = memory_parts(ManualClock::starting_now());
    contract::stale_index_reads_miss_recent_writes(&ports, &memory).await;
}
