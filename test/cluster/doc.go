// Package cluster tests several Gearwork servers sharing one PostgreSQL:
// real "gearwork serve" processes, clients and workers spread over them,
// and a server killed with SIGKILL and restarted during the run.
package cluster
