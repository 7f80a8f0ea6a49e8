package stream

// AppendMergedFrame exposes the merged frame encoder to the tests.
var AppendMergedFrame = appendMergedFrame
