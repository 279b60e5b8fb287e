"""Moving bytes: the transport (TCP, proxy, TLS, the upgrade), the drivers that run a protocol over it (a
call's threads, a batch's selector loop), retries and the spare connection."""
