-- A watched table and a replication user (hookrelay reads the binlog as a replica).
CREATE DATABASE IF NOT EXISTS shop;
CREATE TABLE shop.orders (
    id BIGINT AUTO_INCREMENT PRIMARY KEY,
    status VARCHAR(32) NOT NULL,
    total DECIMAL(12,2) NOT NULL DEFAULT 0
);
CREATE USER 'cdc'@'%' IDENTIFIED WITH mysql_native_password BY 'cdc-password';
GRANT REPLICATION SLAVE, REPLICATION CLIENT ON *.* TO 'cdc'@'%';
GRANT SELECT ON shop.* TO 'cdc'@'%';
