"""`devnet chaos`: a bank workload under a seeded schedule of faults, then an audit."""
