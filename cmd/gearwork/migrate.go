package main

import (
	"context"
	"fmt"
	"io"
	"net/url"
	"strings"

	"github.com/gearwork/gearwork/internal/store/postgres"
)

// runMigrate brings a PostgreSQL store's schema up to date, as "serve"
// does when it starts; useful to migrate ahead of a rolling upgrade or
// with a more privileged database user than the servers use.
func runMigrate(ctx context.Context, args []string, _ io.Reader, stdout, stderr io.Writer) error {
	fs := newFlagSet("migrate", "migrate --store postgres://...", stderr)
	storeURL := fs.String("store", "", "PostgreSQL `URL` of the store (tables go to the first schema of search_path, e.g. ?search_path=gearwork)")
	if err := parseFlagsNoArgs(fs, args); err != nil {
		return err
	}
	if !strings.HasPrefix(*storeURL, "postgres://") && !strings.HasPrefix(*storeURL, "postgresql://") {
		fmt.Fprintln(stderr, "gearwork migrate: --store must be a postgres:// URL (only the PostgreSQL store has a schema)")
		return errUsage
	}
	cfg, err := postgresConfig(*storeURL)
	if err != nil {
		return exitError{code: exitUsage, msg: err.Error()}
	}
	applied, err := postgres.Migrate(ctx, cfg.URL)
	if err != nil {
		return fmt.Errorf("migrate %s: %w", redactURL(cfg.URL), err)
	}
	if len(applied) == 0 {
		fmt.Fprintf(stdout, "schema is up to date (version %d)\n", postgres.LatestVersion)
		return nil
	}
	for _, v := range applied {
		fmt.Fprintf(stdout, "applied migration %d\n", v)
	}
	fmt.Fprintf(stdout, "schema is at version %d\n", postgres.LatestVersion)
	return nil
}

// redactURL hides the password of a connection URL in messages.
func redactURL(s string) string {
	u, err := url.Parse(s)
	if err != nil {
		return "(unparsable URL)"
	}
	return u.Redacted()
}
