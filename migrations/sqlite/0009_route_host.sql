-- The host a running workspace's IDE is reached at, with `host_port`: the address of the node its port is published
-- on (a Swarm task on any node), checked before it is written. NULL: 127.0.0.1, as before. Set and cleared with the
-- port.
ALTER TABLE workspaces ADD COLUMN host_addr TEXT;
