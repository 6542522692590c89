// Package docs holds Arbiter's wire contract: wire-contract.md, the public
// description of the commands, events and conflicts topics for producers and
// consumers in any language, and the JSON Schemas of their records under
// schemas/. It has no code; its test keeps the contract honest by checking
// every example in wire-contract.md against its schema and against the Go
// types in the commands and events packages.
package docs
