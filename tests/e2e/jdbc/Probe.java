// A JDBC client of the SQL endpoint, as a JDBC tool uses it: prints one line per thing it read, which
// tests/e2e/test_sql_jdbc.py compares. Arguments: the JDBC URL, the admin key, a check's uuid.
import java.sql.Connection;
import java.sql.DriverManager;
import java.sql.PreparedStatement;
import java.sql.ResultSet;
import java.sql.SQLException;
import java.sql.Statement;
import java.util.Properties;

public class Probe {
    public static void main(String[] args) throws Exception {
        Properties properties = new Properties();
        properties.setProperty("user", "pingstream");
        properties.setProperty("password", args[1]);
        try (Connection c = DriverManager.getConnection(args[0], properties)) {
            System.out.println("product " + c.getMetaData().getDatabaseProductName());
            try (Statement s = c.createStatement();
                 ResultSet r = s.executeQuery("SELECT 1 AS one, 'x' AS s, toDateTime('2026-12-02 10:00:00', 'UTC') AS t")) {
                r.next();
                System.out.println("row " + r.getInt("one") + " " + r.getString("s") + " " + r.getTimestamp("t").toInstant());
            }
            try (PreparedStatement s = c.prepareStatement("SELECT count() FROM pings WHERE check_id = ?")) {
                s.setObject(1, java.util.UUID.fromString(args[2]));
                try (ResultSet r = s.executeQuery()) {
                    r.next();
                    System.out.println("pings " + r.getLong(1));
                }
            }
            // Several MiB of answer: more than one compressed block.
            try (Statement s = c.createStatement();
                 ResultSet r = s.executeQuery("SELECT number, toString(number) FROM numbers(500000)")) {
                long rows = 0, sum = 0;
                while (r.next()) {
                    rows++;
                    sum += r.getLong(1) + Long.parseLong(r.getString(2));
                }
                System.out.println("numbers " + rows + " " + sum);
            }
            try (ResultSet r = c.getMetaData().getTables(null, "pingstream", "pings", null)) {
                System.out.println("table " + (r.next() ? r.getString("TABLE_NAME") : "none"));
            }
            try (Statement s = c.createStatement()) {
                s.executeQuery("SELECT * FROM nowhere");
                System.out.println("error none");
            } catch (SQLException e) {
                System.out.println("error " + e.getErrorCode());
            }
        }
    }
}
