package kfmops.testserver;

import java.nio.file.Files;
import java.nio.file.Path;
import org.neo4j.configuration.GraphDatabaseSettings;
import org.neo4j.configuration.connectors.BoltConnector;
import org.neo4j.configuration.connectors.HttpConnector;
import org.neo4j.configuration.helpers.SocketAddress;
import org.neo4j.graphdb.Transaction;
import org.neo4j.harness.Neo4j;
import org.neo4j.harness.Neo4jBuilders;
import org.neo4j.io.ByteUnit;

/**
 * Starts an in-process Neo4j community server (neo4j-harness) with Bolt and HTTP
 * on the configured loopback ports, auth disabled, prints a ready line and
 * blocks until the JVM is terminated (SIGTERM closes the database cleanly).
 *
 * Environment: KFMOPS_NEO4J_HOST (127.0.0.1), KFMOPS_NEO4J_BOLT_PORT (7687),
 * KFMOPS_NEO4J_HTTP_PORT (7474), KFMOPS_NEO4J_WORKDIR (./neo4j-data).
 */
public final class Neo4jTestServer {
    private Neo4jTestServer() {}

    private static String env(String name, String dflt) {
        String v = System.getenv(name);
        return v == null || v.isBlank() ? dflt : v;
    }

    public static void main(String[] args) throws Exception {
        String host = env("KFMOPS_NEO4J_HOST", "127.0.0.1");
        int boltPort = Integer.parseInt(env("KFMOPS_NEO4J_BOLT_PORT", "7687"));
        int httpPort = Integer.parseInt(env("KFMOPS_NEO4J_HTTP_PORT", "7474"));
        Path workDir = Path.of(env("KFMOPS_NEO4J_WORKDIR", "neo4j-data")).toAbsolutePath();
        Files.createDirectories(workDir);

        Neo4j neo4j = Neo4jBuilders.newInProcessBuilder(workDir)
                .withConfig(GraphDatabaseSettings.auth_enabled, false)
                .withConfig(GraphDatabaseSettings.pagecache_memory, ByteUnit.mebiBytes(128))
                .withConfig(GraphDatabaseSettings.udc_enabled, false)
                .withConfig(BoltConnector.enabled, true)
                .withConfig(BoltConnector.listen_address, new SocketAddress(host, boltPort))
                .withConfig(BoltConnector.advertised_address, new SocketAddress(host, boltPort))
                .withConfig(HttpConnector.enabled, true)
                .withConfig(HttpConnector.listen_address, new SocketAddress(host, httpPort))
                .withConfig(HttpConnector.advertised_address, new SocketAddress(host, httpPort))
                .build();
        Runtime.getRuntime().addShutdownHook(new Thread(() -> {
            System.out.println("KFMOPS_NEO4J_STOPPING");
            neo4j.close();
        }, "kfmops-neo4j-shutdown"));

        try (Transaction tx = neo4j.defaultDatabaseService().beginTx()) {
            tx.execute("RETURN 1").close();
        }
        System.out.println("KFMOPS_NEO4J_READY bolt=" + neo4j.boltURI() + " http=" + neo4j.httpURI());
        System.out.flush();
        Thread.currentThread().join();
    }
}
