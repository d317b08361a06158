package serverdial_test

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/gearwork/gearwork/internal/serverdial"
)

func TestWithDefaults(t *testing.T) {
	t.Parallel()
	s, err := serverdial.Settings{Servers: []string{"127.0.0.1:4730"}}.WithDefaults("client")
	require.NoError(t, err)
	require.Equal(t, []string{"127.0.0.1:4730"}, s.Servers)
	require.Equal(t, 5*time.Second, s.DialTimeout)
	require.Equal(t, 30*time.Second, s.WriteTimeout)
	require.Equal(t, 100*time.Millisecond, s.MinBackoff)
	require.Equal(t, 10*time.Second, s.MaxBackoff)
	require.Equal(t, 64<<10, s.ReadBuffer)
	require.NotNil(t, s.DialFunc)

	// Set fields are kept, and MaxBackoff is raised to MinBackoff.
	s, err = serverdial.Settings{Servers: []string{"a:1", "b:2"}, WriteTimeout: -1, MinBackoff: 20 * time.Second, ReadBuffer: 512}.WithDefaults("worker")
	require.NoError(t, err)
	require.Equal(t, []string{"a:1", "b:2"}, s.Servers)
	require.Equal(t, time.Duration(-1), s.WriteTimeout)
	require.Equal(t, 20*time.Second, s.MinBackoff)
	require.Equal(t, 20*time.Second, s.MaxBackoff)
	require.Equal(t, 512, s.ReadBuffer)
}

func TestWithDefaultsRefusesBadServers(t *testing.T) {
	t.Parallel()
	_, err := serverdial.Settings{}.WithDefaults("client")
	require.EqualError(t, err, "client: no server")
	_, err = serverdial.Settings{Servers: []string{"no-port"}}.WithDefaults("worker")
	require.ErrorContains(t, err, `worker: server address "no-port"`)
	_, err = serverdial.Settings{Servers: []string{"a:1", "a:1"}}.WithDefaults("client")
	require.EqualError(t, err, `client: server "a:1" listed twice`)
	for _, bad := range []string{"a:99999", "a:0", "a:-1", "a:"} {
		_, err = serverdial.Settings{Servers: []string{bad}}.WithDefaults("client")
		require.ErrorContains(t, err, `client: server address "`+bad+`": port`, bad)
	}
	_, err = serverdial.Settings{Servers: []string{"a:gearman", "[::1]:4730"}}.WithDefaults("client")
	require.NoError(t, err, "a service name is a port too")
}
