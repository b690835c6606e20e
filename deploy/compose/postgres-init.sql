-- The store database and a source database with a watched table.
CREATE DATABASE hookrelay;
CREATE DATABASE shop;
\connect shop
CREATE TABLE public.orders (
    id bigserial PRIMARY KEY,
    status text NOT NULL,
    total numeric(12,2) NOT NULL DEFAULT 0
);
