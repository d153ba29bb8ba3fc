-- One database and one role per service (DESIGN §4): each service owns
-- its schema and cannot reach another's data. The compose file's
-- DATABASE_URL of each service names its role and database; the passwords
-- are development credentials (PostgreSQL is not published to the host).
-- Runs once, when the postgres-data volume is empty (`make down` empties it).
-- Identifiers are quoted: "user" is a reserved word.

CREATE ROLE "auth" LOGIN PASSWORD 'auth';
CREATE DATABASE "auth" OWNER "auth";
REVOKE ALL ON DATABASE "auth" FROM PUBLIC;

CREATE ROLE "user" LOGIN PASSWORD 'user';
CREATE DATABASE "user" OWNER "user";
REVOKE ALL ON DATABASE "user" FROM PUBLIC;

CREATE ROLE "product" LOGIN PASSWORD 'product';
CREATE DATABASE "product" OWNER "product";
REVOKE ALL ON DATABASE "product" FROM PUBLIC;

CREATE ROLE "order" LOGIN PASSWORD 'order';
CREATE DATABASE "order" OWNER "order";
REVOKE ALL ON DATABASE "order" FROM PUBLIC;

CREATE ROLE "payment" LOGIN PASSWORD 'payment';
CREATE DATABASE "payment" OWNER "payment";
REVOKE ALL ON DATABASE "payment" FROM PUBLIC;

CREATE ROLE "notification" LOGIN PASSWORD 'notification';
CREATE DATABASE "notification" OWNER "notification";
REVOKE ALL ON DATABASE "notification" FROM PUBLIC;
