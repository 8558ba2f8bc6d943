"""HTTP routers: thin glue between the wire and the services."""
