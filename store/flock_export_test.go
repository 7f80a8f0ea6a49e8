package store

// HaveFlock reports whether CreateTemp can tell a dead writer's leftover
// from a live writer's file here; tests of the take-over skip without it.
const HaveFlock = haveFlock
