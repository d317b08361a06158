// Package auth holds Gearwork's identities and authorization rules.
//
// # Identities
//
// Gearman has no authentication packet, so on the Gearman port an
// Identity comes from the transport: the subject common name and
// alternative names of a client certificate verified by mutual TLS, and
// the source address. FromConn builds one from a connection.
//
// # Rules
//
// A Policy is a list of rules, each matching identities (by certificate
// name, verified-ness or source address) and allowing or denying actions
// on names given as glob patterns:
//
//	auth:
//	  rules:
//	    - name: web front ends may submit e-mail jobs
//	      match: {cn: ["web-*"], address: ["10.1.0.0/16"]}
//	      allow: {submit: ["email.*"]}
//	    - name: workers
//	      match: {verified: true, san: ["*.workers.internal"]}
//	      allow: {serve: ["*"]}
//	      deny:  {serve: ["billing.*"]}
//	    - name: operators
//	      match: {cn: ["ops-*"]}
//	      allow: {admin: ["*"], submit: ["*"], read: ["*"]}
//
// # Guarantees
//
//   - Deny wins: a name denied by any matching rule is denied, whatever
//     other rules allow.
//   - Default deny: what no matching rule allows is denied.
//   - Certificate names count only when the certificate was verified; an
//     unverified certificate matches no cn, san or verified rule.
//   - Pattern matching takes time proportional to pattern length times
//     name length at worst; it never recurses.
package auth
