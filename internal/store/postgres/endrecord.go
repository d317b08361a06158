package postgres

import (
	"strconv"
)

// The record of a job that ends in the database rather than on a server
// (a cancel of a job nobody holds, cancelQueuedSQL; a waiting job
// cancelled because a job it waited for ended without success,
// depEndSQL) is written by SQL from the job's row: cancelledRecordsSQL is
// that one mapping from a row of gearwork_jobs to a record, so that each
// such path keeps what the broker's own record of the job keeps (its
// attempts and their history, last error, limit of attempts and ordering
// key as well as what it was submitted with).

// utf8Hex matches the hex encoding of valid UTF-8 without NUL bytes: the
// bytes PostgreSQL's text takes as they are.
const utf8Hex = `^(?:0[1-9a-f]|[1-7][0-9a-f]` +
	`|(?:c[2-9a-f]|d[0-9a-f])[89ab][0-9a-f]` +
	`|e0[ab][0-9a-f][89ab][0-9a-f]` +
	`|(?:e[1-9a-c]|e[ef])(?:[89ab][0-9a-f]){2}` +
	`|ed[89][0-9a-f][89ab][0-9a-f]` +
	`|f0(?:9[0-9a-f]|[ab][0-9a-f])(?:[89ab][0-9a-f]){2}` +
	`|f[1-3](?:[89ab][0-9a-f]){3}` +
	`|f48[0-9a-f](?:[89ab][0-9a-f]){2})*$`

// recordText is the SQL text of the bytea expression col for a JSON
// record: its bytes when they are UTF-8, else octal escapes for the bytes
// that are not ASCII (and doubled backslashes).
func recordText(col string) string {
	return `CASE WHEN encode(` + col + `, 'hex') ~ '` + utf8Hex + `' THEN convert_from(` + col + `, 'UTF8')
		ELSE encode(` + col + `, 'escape') END`
}

// cancelledRecordsSQL writes a record in state "cancelled" for each row
// of del, a CTE of whole gearwork_jobs rows (RETURNING g.*) that this
// statement deleted; by is the SQL expression of who cancelled the job
// (CancelledBy; "" writes none). A record stored already is kept (the
// first end wins). The record is JSON, which the broker reads as well as
// its own encoding: a unique that is the payload's hash reads "-", as the
// broker shows it.
func cancelledRecordsSQL(by string) string {
	cancelledBy := ""
	if by != "" {
		cancelledBy = `'CancelledBy', ` + by + `, `
	}
	return `INSERT INTO gearwork_records (seq, function, state, finished, batch, data)
	SELECT seq, function, 'cancelled', (extract(epoch FROM clock_timestamp()) * 1e9)::bigint, batch,
		convert_to(jsonb_build_object(
			'Unique', CASE WHEN uniq IS NULL THEN ''
				WHEN substring(uniq FROM 1 FOR 2) = '\x002d'::bytea THEN '-'
				ELSE ` + recordText("uniq") + ` END,
			'Priority', priority, 'Background', true, 'Retries', retries,
			'Attempts', attempts, 'MaxAttempts', max_attempts,
			'LastError', ` + recordText("last_error") + `,
			'OrderingKey', ` + recordText("ordering_key") + `,
			'History', history,
			'PayloadPreview', translate(encode(substring(payload FROM 1 FOR ` + strconv.Itoa(recordPreviewCap) + `), 'base64'), E'\n', ''),
			'PayloadSize', length(payload), 'Submitted', created_at,
			` + cancelledBy + `'CancelledAt', clock_timestamp(), 'Batch', batch)::text, 'UTF8')
	FROM del
	ON CONFLICT (seq) DO NOTHING`
}
