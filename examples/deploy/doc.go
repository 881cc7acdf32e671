// Package deploy holds production examples for a twice service run three times: an HAProxy
// configuration, a Kubernetes Deployment and a docker compose file (README.md explains
// each), and the tests that run them. The service they run is [github.com/twicehq/twice/examples/deploy/app].
package deploy
