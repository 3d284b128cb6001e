package httpapi

// Golden compares got with testdata/name (rewritten with -update), for the
// external tests.
var Golden = golden
