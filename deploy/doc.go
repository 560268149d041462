// Package deploy holds the deployment kit (Dockerfile, compose.yaml, the
// nginx site, the systemd unit) and the tests that run its pieces for real:
// the image is built and started with podman, the unit is checked by
// systemd-analyze. deploy/nginx/presenced.conf is run by e2e's
// TestBehindNginx.
package deploy
