package pgctl

const helperEnv = "PGCTL_TEST_HELPER"

func runHelper(string) int { return 2 }
