package postgres

import (
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgtype"

	"github.com/gearwork/gearwork/internal/store"
)

// numberPool holds sequence numbers that committed rounds reserved
// (reserveSQL), for the rounds of plain new jobs that follow: such a round
// inserts its jobs with these numbers (plainNumberedInsertSQL), a plain
// INSERT … SELECT, instead of numbering them in the statement, which needs
// the rows materialized and joined back to the input to tell which number
// went to which job.
//
// The numbers keep the jobs of this store numbered in the order of their
// rounds: a reservation is taken after every number this store handed
// out before it, and the pool is emptied whenever a job is numbered
// otherwise (by nextval in a statement, or numbered by the caller), since
// the numbers left in it would then be lower than that job's. A number is
// used once, whatever its round's outcome, and only once the round that
// reserved it has committed (that commit flushed the sequence's WAL
// record, so the database never hands it out again, even after a crash).
// Numbers older than poolFresh are dropped, so that this store's jobs do
// not keep numbers far below those other servers give meanwhile (claims
// go by number).
type numberPool struct {
	mu   sync.Mutex
	seqs []int64   // ascending
	at   time.Time // when the oldest of seqs were reserved
}

const (
	// poolFresh is how long reserved numbers are used.
	poolFresh = time.Second
	// poolMin and poolMax bound a reservation.
	poolMin, poolMax = 64, 8192
)

// take removes n numbers from the pool and returns them, or returns nil
// (and empties the pool) when it holds fewer fresh ones.
func (p *numberPool) take(n int, now time.Time) []int64 {
	p.mu.Lock()
	defer p.mu.Unlock()
	if now.Sub(p.at) > poolFresh || len(p.seqs) < n {
		p.seqs = nil
		return nil
	}
	out := p.seqs[:n:n]
	p.seqs = p.seqs[n:]
	return out
}

// want returns how many numbers a round of n plain new jobs should
// reserve for the rounds after it: none while the pool holds enough for
// two more such rounds, else enough for about eight.
func (p *numberPool) want(n int, now time.Time) int {
	p.mu.Lock()
	defer p.mu.Unlock()
	if now.Sub(p.at) <= poolFresh && len(p.seqs) >= 2*n {
		return 0
	}
	return min(max(8*n, poolMin), poolMax)
}

// reset empties the pool: a job was numbered otherwise.
func (p *numberPool) reset() {
	p.mu.Lock()
	p.seqs = nil
	p.mu.Unlock()
}

// add puts the numbers a committed round reserved into the pool. Numbers
// still in it from before are kept when the round used the pool (they are
// lower than the new ones); otherwise drop says to replace them.
func (p *numberPool) add(seqs []uint64, drop bool, now time.Time) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if drop || now.Sub(p.at) > poolFresh {
		p.seqs = nil
	}
	if len(seqs) > 0 {
		if len(p.seqs) == 0 {
			p.at = now // else the kept numbers are the oldest
		}
		for _, q := range seqs {
			p.seqs = append(p.seqs, seqArg(q))
		}
	}
}

// plainNumberedInsertSQL inserts plain new jobs (plainJob) with the
// numbers given ($6), as plainInsertSQL does with numbers it takes.
var plainNumberedInsertSQL = `
	INSERT INTO gearwork_jobs AS g (seq, handle, function, payload, priority, run_at, owner)
	SELECT i.seq, $7::bytea || convert_to(i.seq::text, 'UTF8'), i.function, i.payload, i.priority, i.run_at,
		CASE WHEN i.claim AND ` + memberExists(8) + ` THEN $8::bigint END
	FROM unnest($1::bytea[], $2::bytea[], $3::smallint[], $4::bigint[], $5::boolean[], $6::bigint[])
		AS i(function, payload, priority, run_at, claim, seq)
	RETURNING g.seq, g.owner`

// allPlainNew reports whether every job a round sends (sent, indexes of
// jobs) is a plainJob the store is to number.
func allPlainNew(jobs []store.Job, sent []int) bool {
	for _, i := range sent {
		if jobs[i].Seq != 0 || !plainJob(jobs[i]) {
			return false
		}
	}
	return len(sent) > 0
}

// readNumberedInserted reads plainNumberedInsertSQL's rows for the jobs
// rows (statement row order), numbered seqs (ascending, in that order),
// into out; the jobs the statement did not return are missing.
func readNumberedInserted(br pgx.BatchResults, rows []int, seqs []int64, out []store.Inserted, id int64) ([]int, error) {
	var (
		seq   int64
		owner pgtype.Int8
	)
	return eachInserted(br, rows, func(res pgx.Rows) (int, error) {
		if err := res.Scan(&seq, &owner); err != nil {
			return -1, err
		}
		k, ok := slices.BinarySearch(seqs, seq)
		if !ok {
			return -1, nil
		}
		out[rows[k]] = store.Inserted{Seq: uint64(seq), Created: true, Claimed: owner.Valid && owner.Int64 == id && id != 0}
		return k, nil
	})
}

// poolRound is what one commit round does with the number pool.
type poolRound struct {
	// seqs numbers the round's jobs (by statement row), nil when the round
	// does not use the pool.
	seqs []int64
	// reserve is how many numbers the round reserves; reserved gets them.
	reserve  int
	reserved []uint64
}

// planPool decides what a round of the jobs sent does with the pool.
func (s *Store) planPool(jobs []store.Job, sent []int) *poolRound {
	if !allPlainNew(jobs, sent) {
		return &poolRound{}
	}
	now := time.Now()
	r := &poolRound{reserve: s.numbers.want(len(sent), now)}
	r.seqs = s.numbers.take(len(sent), now)
	return r
}

// settlePool puts what a committed round reserved into the pool, and
// empties it when the round numbered jobs otherwise.
func (s *Store) settlePool(r *poolRound, numberedOtherwise bool) {
	s.numbers.add(r.reserved, numberedOtherwise, time.Now())
}

// unclaimedNumberedInsertSQL inserts plain new jobs that nobody claims
// with the numbers given ($5), as plainNumberedInsertSQL does, without
// returning rows: the numbers are known, nobody holds the jobs, and every
// row is inserted or the statement fails.
const unclaimedNumberedInsertSQL = `
	INSERT INTO gearwork_jobs (seq, handle, function, payload, priority, run_at)
	SELECT i.seq, $6::bytea || convert_to(i.seq::text, 'UTF8'), i.function, i.payload, i.priority, i.run_at
	FROM unnest($1::bytea[], $2::bytea[], $3::smallint[], $4::bigint[], $5::bigint[])
		AS i(function, payload, priority, run_at, seq)`

// unclaimedInsertStep returns the step that inserts the jobs rows of
// jobs, nobody claiming them, with the numbers seqs (in rows' order), and
// answers them in out.
func unclaimedInsertStep(jobs []store.Job, rows []int, seqs []int64, prefix string, out []store.Inserted) batchStep {
	function := make([][]byte, len(rows))
	payload := make([][]byte, len(rows))
	priority := make([]int16, len(rows))
	runAt := make([]int64, len(rows))
	for k, i := range rows {
		j := &jobs[i]
		function[k], payload[k] = nonNil([]byte(j.Function)), nonNil(j.Payload)
		priority[k], runAt[k] = int16(j.Priority), j.RunAt
	}
	return batchStep{sql: unclaimedNumberedInsertSQL, args: []any{function, payload, priority, runAt, seqs, []byte(prefix)},
		read: func(br pgx.BatchResults) error {
			tag, err := br.Exec()
			if err != nil {
				return err
			}
			if n := tag.RowsAffected(); n != int64(len(rows)) {
				return fmt.Errorf("inserted %d of %d jobs", n, len(rows))
			}
			for k, i := range rows {
				out[i] = store.Inserted{Seq: uint64(seqs[k]), Created: true}
			}
			return nil
		}}
}
