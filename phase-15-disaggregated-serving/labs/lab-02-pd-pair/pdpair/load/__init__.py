"""Load and measurement: an SSE client that timestamps every chunk (client), the signature workload
(workload), connection churn (churn)."""
