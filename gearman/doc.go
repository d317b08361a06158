// Package gearman is the Gearman wire protocol: the binary packets that
// clients, workers and job servers exchange, and the text lines of the
// administrative protocol. It holds no connection and no state; Gearwork's
// server, its Go client and its Go worker all speak through it.
//
// # Packets
//
// A binary packet is a 12-byte header (magic "\0REQ" to a server or
// "\0RES" from one, the packet type as a Command, the body length) and a
// body of NUL-separated arguments. AppendPacket encodes one; ParseHeader
// checks a header (magic and size, against a caller's limit) and SplitArgs
// splits a body into the arguments a Command takes. The limits gearmand
// keeps (MaxFunctionSize, MaxUniqueSize, …) are constants here.
//
// # Reading a stream
//
// Reader decodes a connection's byte stream into Frames: a binary packet,
// or an admin text line when a frame does not start with NUL, as gearmand
// accepts both on one port. A packet's arguments alias the Frame's Body,
// which the Reader allocates afresh for each packet, so they may be kept.
// A Reader is not safe for concurrent use. Text lines longer than MaxTextLine fail with
// ErrLineTooLong, and a header that cannot be accepted with a
// *HeaderError, whose Code is the Gearman error code to answer with.
//
// # Admin lines
//
// ParseAdmin splits a text line ("status", "maxqueue fn 10", …) into an
// AdminCommand; words match case-insensitively, as in gearmand.
//
// The packet types and their argument counts follow the protocol
// specification at gearman.org and gearmand's behaviour; docs/protocol.md
// lists where Gearwork deviates.
package gearman
